"""Transformers written from the blocks of :mod:`zoo.layers.attention`: an encoder classifier, a GPT-style language
model and an encoder-decoder for seq2seq.

- :class:`TransformerClassifier` (Vaswani et al., 2017, encoder only): pre-norm blocks over token ids or features,
  padded keys masked, pooled over the valid steps; the sequence classification task.
- :class:`GPT` (Radford et al., 2019; laid out as nanoGPT's ``model.py``): learned positions (or rotary/sinusoidal),
  causal pre-norm blocks, a final LayerNorm and a head tied to the token embedding; GPT-2 initialization (normal
  0.02, residual projections scaled by ``1/sqrt(2 * n_layer)``). Generation keeps a :class:`KVCache` per layer;
  its logits equal re-running the whole context (``tests/test_language_model.py``).
- :class:`Seq2SeqTransformer`: encoder and decoder stacks sharing one token embedding, tied to the output head;
  greedy and beam-search decoding from the seq2seq task.

Each model also offers ``attention_maps(x)``: the attention weights of every layer for inspection (read by
``callbacks.AttentionMapLogger``). No ``nn.Transformer*`` module is used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.layers.attention import DecoderBlock, EncoderBlock, KVCache, PositionName, build_position_encoding
from zoo.layers.checkpointing import checkpoint_module, use_checkpointing
from zoo.layers.sequence import PoolingName, SequencePooling, lengths_to_mask
from zoo.registry import InputSpec, register_model
from zoo.tasks.language_model import LanguageModel
from zoo.tasks.seq2seq import Memory, Seq2SeqTask
from zoo.tasks.sequence import SequenceClassifier


def init_gpt2(module: nn.Module, depth: int, std: float = 0.02) -> None:
    """GPT-2 initialization: normal(0, ``std``) weights, zero biases, residual output projections scaled by
    ``1/sqrt(2 * depth)`` (two residual branches per block). GPT-2's 0.02 suits widths near 768; narrow models
    pass ``1/sqrt(width)``, or attention scores start 100 times too small to learn from."""
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.Embedding)):
            scale = std / math.sqrt(2 * depth) if name.endswith(("out_proj", "mlp.2")) else std
            nn.init.normal_(sub.weight, std=scale)
            if isinstance(sub, nn.Linear) and sub.bias is not None:
                nn.init.zeros_(sub.bias)


class TransformerEncoder(nn.Module):
    """A stack of pre-norm :class:`~zoo.layers.attention.EncoderBlock`s and a final LayerNorm over ``(B, T, D)``.

    Args:
        dim: model width.
        depth: blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``dim``.
        dropout: attention and residual dropout.
        rotary: rotary positions in every block.
        causal: each step sees only itself and earlier steps (a decoder-only stack).
        grad_checkpointing: recompute each block's activations in the backward pass instead of storing them (in
            training, without caches or attention weights).
        norm_first: pre-norm blocks and a final LayerNorm (True), or post-norm blocks, whose output is already
            normalized (False).

    >>> encoder = TransformerEncoder(16, depth=2, num_heads=4)
    >>> out, weights = encoder(torch.randn(2, 5, 16), need_weights=True)
    >>> out.shape, len(weights), weights[0].shape
    (torch.Size([2, 5, 16]), 2, torch.Size([2, 4, 5, 5]))
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rotary: bool = False,
        causal: bool = False,
        grad_checkpointing: bool = False,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.grad_checkpointing = grad_checkpointing
        self.blocks = nn.ModuleList(
            EncoderBlock(dim, num_heads, mlp_ratio, dropout, rotary, norm_first) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim) if norm_first else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The normalized states ``(B, T, D)`` and, when ``need_weights``, each block's weights ``(B, H, T, S)``."""
        weights = []
        if caches is None and not need_weights and use_checkpointing(self, self.grad_checkpointing):
            for block in self.blocks:
                x, _ = checkpoint_module(block, x, key_padding_mask, self.causal)
            return self.norm(x), weights
        for index, block in enumerate(self.blocks):
            cache = caches[index] if caches is not None else None
            x, weight = block(x, key_padding_mask, self.causal, cache, need_weights)
            if need_weights:
                weights.append(weight)
        return self.norm(x), weights


class TransformerDecoder(nn.Module):
    """A stack of pre-norm :class:`~zoo.layers.attention.DecoderBlock`s (causal self-attention, cross-attention to
    the memory) and a final LayerNorm.

    Args:
        dim: model width.
        depth: blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``dim``.
        dropout: attention and residual dropout.
        rotary: rotary positions in the self-attention.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, rotary: bool = False
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads, mlp_ratio, dropout, rotary) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The normalized states ``(B, T, D)`` and, when ``need_weights``, each block's cross-attention weights."""
        weights = []
        for block in self.blocks:
            x, weight = block(x, memory, memory_padding_mask, need_weights=need_weights)
            if need_weights:
                weights.append(weight)
        return self.norm(x), weights


def _add_positions(position: nn.Module | None, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
    return x if position is None else position(x, offset)


def _init_scaled_embedding(embedding: nn.Embedding) -> None:
    """Normal(0, 1/sqrt(D)) weights, read times sqrt(D) (Vaswani et al., 2017): token vectors of unit scale beside
    the unit-amplitude sinusoidal table (GPT-2's 0.02 would leave them 50 times smaller than the positions)."""
    nn.init.normal_(embedding.weight, std=embedding.embedding_dim**-0.5)


class TransformerClassifier(SequenceClassifier):
    """A Transformer encoder over token ids or float features, pooled over the valid steps, and a linear head.

    Args:
        num_classes: number of classes.
        vocab_size: token ids (an embedding); 0 for float features (a linear projection).
        in_features: features per step of float inputs.
        max_length: the longest sequence (the size of learned/sinusoidal position tables; 0: 1024).
        pooling: ``"mean"``, ``"last"``, ``"max"`` or ``"attention"`` over the valid steps.
        embed_dim: model width.
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``embed_dim``.
        dropout: attention, residual and head dropout.
        position: ``"sinusoidal"``, ``"learned"``, ``"rotary"`` or ``"none"``.
        norm_first: pre-norm (True) or post-norm (False) blocks, see :class:`~zoo.layers.attention.EncoderBlock`.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.SequenceClassifier`.

    >>> model = TransformerClassifier(num_classes=3, vocab_size=10, max_length=12, embed_dim=16, num_heads=2)
    >>> model(torch.randint(0, 10, (2, 12))).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        num_classes: int = 2,
        vocab_size: int = 0,
        in_features: int = 1,
        max_length: int = 0,
        pooling: PoolingName = "mean",
        embed_dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        position: PositionName = "sinusoidal",
        norm_first: bool = True,
        **task_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            vocab_size=vocab_size,
            in_features=in_features,
            max_length=max_length,
            pooling=pooling,
            **task_args,
        )
        self.embed = nn.Embedding(vocab_size, embed_dim) if vocab_size else nn.Linear(in_features, embed_dim)
        self.position = build_position_encoding(position, embed_dim, max_length or 1024)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(
            embed_dim, depth, num_heads, mlp_ratio, dropout, rotary=position == "rotary", norm_first=norm_first
        )
        self.num_features = embed_dim
        self.pool = SequencePooling(pooling, embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        init_gpt2(self, depth, std=embed_dim**-0.5)
        if vocab_size:
            _init_scaled_embedding(self.embed)

    def _encode(
        self, x: torch.Tensor, lengths: torch.Tensor | None, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        lengths = self.check_input(x, lengths)
        padding = ~lengths_to_mask(lengths, x.shape[1])  # (B, T), True at padded steps
        tokens = self.embed(x) * math.sqrt(self.num_features) if self.vocab_size else self.embed(x)
        states, weights = self.encoder(
            self.drop(_add_positions(self.position, tokens)), padding, need_weights=need_weights
        )
        return states, lengths, weights

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features ``(B, embed_dim)``."""
        states, lengths, _ = self._encode(x, lengths)
        return self.drop(self.pool(states, lengths))

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Self-attention weights ``(B, H, T, T)`` of each encoder block, named ``encoder.<i>``."""
        weights = self._encode(x, lengths, need_weights=True)[2]
        return {f"encoder.{index}": weight for index, weight in enumerate(weights)}


class GPT(LanguageModel):
    """Decoder-only Transformer language model with weight tying and a KV cache for generation.

    Args:
        vocab: the vocabulary's characters (linked from the datamodule); ``""`` with ``vocab_size`` for bare ids.
        vocab_size: number of token ids (from ``vocab`` when given).
        block_size: the longest context (positions of the learned table).
        n_layer: blocks.
        n_head: attention heads.
        n_embd: model width.
        mlp_ratio: MLP width over ``n_embd``.
        dropout: embedding, attention and residual dropout.
        position: ``"learned"`` (GPT-2), ``"sinusoidal"``, ``"rotary"`` or ``"none"``.
        tie_weights: share the token embedding with the output head (Press & Wolf, 2017).
        grad_checkpointing: recompute each block's activations in the backward pass instead of storing them (less
            memory, about one more forward of compute; training only).
        norm_first: pre-norm (GPT-2, True) or post-norm (False) blocks, see
            :class:`~zoo.layers.attention.EncoderBlock`.
        **task_args: ``warmup_steps``, optimizer and schedule, see :class:`~zoo.tasks.language_model.LanguageModel`.

    >>> model = GPT(vocab="abc", block_size=8, n_layer=1, n_head=2, n_embd=16)
    >>> model(model.encode("abca").unsqueeze(0)).shape
    torch.Size([1, 4, 3])
    >>> len(model.generate("ab", max_new_tokens=5, top_k=2))
    7
    """

    def __init__(
        self,
        vocab: str = "",
        vocab_size: int = 0,
        block_size: int = 64,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        position: PositionName = "learned",
        tie_weights: bool = True,
        grad_checkpointing: bool = False,
        norm_first: bool = True,
        **task_args: Any,
    ) -> None:
        super().__init__(vocab=vocab, vocab_size=vocab_size, block_size=block_size, **task_args)
        self.token_embedding = nn.Embedding(self.vocab_size, n_embd)
        self.position = build_position_encoding(position, n_embd, block_size)
        self.drop = nn.Dropout(dropout)
        self.transformer = TransformerEncoder(
            n_embd,
            n_layer,
            n_head,
            mlp_ratio,
            dropout,
            rotary=position == "rotary",
            causal=True,
            grad_checkpointing=grad_checkpointing,
            norm_first=norm_first,
        )
        self.head = nn.Linear(n_embd, self.vocab_size, bias=False)
        init_gpt2(self, n_layer)
        if tie_weights:
            self.head.weight = self.token_embedding.weight

    def forward(self, x: torch.Tensor, caches: list[KVCache] | None = None, need_weights: bool = False) -> torch.Tensor:
        """Next-token logits ``(B, T, V)``; with ``caches`` the ids continue the cached positions."""
        self.check_input(x)
        offset = caches[0].length if caches else 0
        h = self.drop(_add_positions(self.position, self.token_embedding(x), offset))  # (B, T, D)
        h, self._weights = self.transformer(h, caches=caches, need_weights=need_weights)
        return self.head(h)

    def next_token_logits(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits of the next token from the KV cache in ``state``: only the new token is run, unless the context
        outgrows ``block_size``, where the last ``block_size`` tokens are run afresh (as without a cache)."""
        if state is None or state[0].length + 1 > self.block_size or state[0].length + 1 != ids.shape[1]:
            caches = [KVCache() for _ in self.transformer.blocks]
            return self(ids[:, -self.block_size :], caches)[:, -1], caches
        return self(ids[:, -1:], state)[:, -1], state

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Causal self-attention weights ``(B, H, T, T)`` of each block, named ``block.<i>``."""
        self(x[:, -self.block_size :], need_weights=True)
        weights, self._weights = self._weights, []
        return {f"block.{index}": weight for index, weight in enumerate(weights)}


class Seq2SeqTransformer(Seq2SeqTask):
    """Encoder-decoder Transformer over a character vocabulary, greedy or beam-search decoding.

    Args:
        vocab: the characters of sources and targets (linked from the datamodule).
        max_length: the longest source (linked); answers are decoded up to ``max_length + 1`` tokens.
        embed_dim: model width.
        encoder_depth: encoder blocks.
        decoder_depth: decoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``embed_dim``.
        dropout: embedding, attention and residual dropout.
        position: ``"sinusoidal"``, ``"learned"``, ``"rotary"`` or ``"none"``.
        tie_weights: share the token embedding with the output head.
        **task_args: ``label_smoothing``, ``decoding``, ``beam_size``, optimizer and schedule, see
            :class:`~zoo.tasks.seq2seq.Seq2SeqTask`.

    >>> model = Seq2SeqTransformer(vocab="ab", max_length=6, embed_dim=16, num_heads=2)
    >>> len(model.generate("abba", method="beam", beam_size=2)) <= 7
    True
    """

    def __init__(
        self,
        vocab: str = "0123456789",
        max_length: int = 16,
        embed_dim: int = 64,
        encoder_depth: int = 2,
        decoder_depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        position: PositionName = "sinusoidal",
        tie_weights: bool = True,
        **task_args: Any,
    ) -> None:
        super().__init__(vocab=vocab, max_length=max_length, **task_args)
        rotary = position == "rotary"
        self.embed = nn.Embedding(self.vocab_size, embed_dim)
        self.position = build_position_encoding(position, embed_dim, max_length + 2)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(embed_dim, encoder_depth, num_heads, mlp_ratio, dropout, rotary)
        self.decoder = TransformerDecoder(embed_dim, decoder_depth, num_heads, mlp_ratio, dropout, rotary)
        self.head = nn.Linear(embed_dim, self.vocab_size, bias=False)
        init_gpt2(self, encoder_depth + decoder_depth, std=embed_dim**-0.5)
        _init_scaled_embedding(self.embed)
        if tie_weights:
            self.head.weight = self.embed.weight

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(ids) * math.sqrt(self.embed.embedding_dim)  # unit scale, as the sinusoidal table
        return self.drop(_add_positions(self.position, tokens))

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor, need_weights: bool = False) -> Memory:
        """``(memory (B, S, D), padding (B, S))``; padded source steps are masked keys of the cross-attention."""
        padding = ~lengths_to_mask(src_lengths, src.shape[1])
        memory, self._weights = self.encoder(self._embed(src), padding, need_weights=need_weights)
        return memory, padding

    def decode(self, memory: Memory, tgt_in: torch.Tensor, need_weights: bool = False) -> torch.Tensor:
        states, self._cross_weights = self.decoder(self._embed(tgt_in), *memory, need_weights=need_weights)
        return self.head(states)

    @torch.no_grad()
    def attention_maps(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encoder self-attention ``(B, H, S, S)`` per block and, for the greedy answer, the decoder's
        cross-attention ``(B, H, T, S)`` per block."""
        src_lengths = self.check_input(src, src_lengths)
        answer = self.generate(src, src_lengths)
        memory = self.encode(src, src_lengths, need_weights=True)
        maps = {f"encoder.{index}": weight for index, weight in enumerate(self._weights)}
        self.decode(memory, self.decoder_inputs(answer), need_weights=True)
        maps.update({f"cross.{index}": weight for index, weight in enumerate(self._cross_weights)})
        self._weights, self._cross_weights = [], []
        return maps


@register_model(
    TransformerClassifier,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=8),
    num_params=3_508,
    source="tiny Transformer encoder classifier (Vaswani et al., 2017) for fast tests",
    task="sequence_classification",
)
def transformer_cls_test() -> dict[str, Any]:
    """One pre-norm block of width 16 (2 heads) over an 8-id vocabulary, mean pooling."""
    return dict(num_classes=4, vocab_size=8, max_length=16, embed_dim=16, depth=1, num_heads=2, dropout=0.0)


@register_model(
    TransformerClassifier,
    input_size=InputSpec((8, 8), kind="series"),
    num_params=101_322,
    source="Transformer encoder classifier (Vaswani et al., 2017) on the rows of 8x8 digits",
    task="sequence_classification",
)
def transformer_digits() -> dict[str, Any]:
    """Two pre-norm blocks of width 64 (4 heads) over the 8 rows (8 features each) of 8x8 digits, mean pooling."""
    return dict(num_classes=10, in_features=8, max_length=8, embed_dim=64, depth=2, num_heads=4, dropout=0.1)


@register_model(
    GPT,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, vocab_size=16),
    num_params=26_496,
    source="tiny GPT (nanoGPT layout) for fast tests",
    task="language_modeling",
)
def gpt_test() -> dict[str, Any]:
    """Two causal blocks of width 32 (2 heads), context 16, over 16 ids."""
    return dict(vocab_size=16, block_size=16, n_layer=2, n_head=2, n_embd=32)


@register_model(
    GPT,
    input_size=InputSpec((64,), kind="tokens", dtype=torch.long, vocab_size=65),
    num_params=809_856,
    source="GPT-2 layout at nanoGPT's CPU shakespeare_char size (Karpathy, nanoGPT)",
    task="language_modeling",
)
def gpt_shakespeare_char() -> dict[str, Any]:
    """Four causal blocks of width 128 (4 heads), context 64, over Tiny Shakespeare's 65 characters."""
    return dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0)


@register_model(
    Seq2SeqTransformer,
    input_size=InputSpec((8,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=13),
    num_params=30_240,
    source="tiny encoder-decoder Transformer (Vaswani et al., 2017) for fast tests",
    task="seq2seq",
)
def seq2seq_transformer_test() -> dict[str, Any]:
    """One encoder and one decoder block of width 32 (2 heads) over digit strings of up to 8."""
    return dict(
        vocab="0123456789", max_length=8, embed_dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, dropout=0.0
    )


@register_model(
    Seq2SeqTransformer,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=13),
    num_params=234_560,
    source="encoder-decoder Transformer (Vaswani et al., 2017), pre-norm, on digit strings",
    task="seq2seq",
)
def seq2seq_transformer_small() -> dict[str, Any]:
    """Two encoder and two decoder blocks of width 64 (4 heads) over digit strings of up to 16."""
    return dict(
        vocab="0123456789", max_length=16, embed_dim=64, encoder_depth=2, decoder_depth=2, num_heads=4, dropout=0.0
    )


@register_model(
    TransformerClassifier,
    input_size=InputSpec((128,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=1500),
    num_params=196_616,
    source="Transformer encoder classifier (Vaswani et al., 2017) on Shakespeare's speakers",
    task="sequence_classification",
)
def transformer_speakers() -> dict[str, Any]:
    """Two pre-norm blocks of width 64 (4 heads) over ShakespeareSpeakersDataModule's 1,500 ids and up to 128 tokens,
    sinusoidal positions, mean pooling, eight speakers."""
    return dict(
        num_classes=8, vocab_size=1500, max_length=128, embed_dim=64, depth=2, num_heads=4, dropout=0.2, pooling="mean"
    )
