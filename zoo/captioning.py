"""Image captioning: an image encoder whose grid of features becomes tokens, and a decoder that attends to them.

:class:`ImageTokens` turns any trunk's output into tokens ``(B, N, D)``: a small conv net of its own, a torchvision
trunk (a ResNet's 7x7 grid at 224 pixels) or a timm model (a CNN's grid, or a ViT's patch tokens). Two decoders
read them: :class:`LSTMAttentionDecoder` (the textbook's 2-layer LSTM with multi-head attention over the image
tokens at each word, Show, Attend and Tell's scheme) and :class:`TransformerCaptionDecoder` (pre-norm blocks of
causal self-attention with a KV cache and cross-attention to the image). Both are plain ``nn.Module``s;
:class:`ImageCaptioner` is the LightningModule that pairs them and trains by
:class:`~zoo.tasks.captioning.CaptioningTask`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from typing import Any, Literal

import timm
import torch
from torch import nn

from zoo.backbone import TV_PREFIX, load_weights_file, timm_from_cache, torchvision_model
from zoo.layers.attention import DecoderBlock, KVCache, MultiHeadAttention
from zoo.layers.conv_blocks import ConvStack
from zoo.registry import register_model
from zoo.tasks.captioning import DEFAULT_VOCAB, CaptioningTask, Memory
from zoo.transformer import init_gpt2

DecoderName = Literal["lstm", "transformer"]


def build_trunk(encoder: str, in_channels: int, widths: Sequence[int], pretrained: bool) -> nn.Module:
    """The image trunk named ``encoder``, named as :class:`~zoo.Backbone` names its models: ``"conv"`` (3x3 conv
    stages, each after the first halving the size), ``"tv:<name>"`` (a torchvision model without its pooling and
    classifier) or a timm model name (its ``forward_features``). Pretrained weights come from the local caches only."""
    if encoder == "conv":
        return ConvStack(in_channels, widths, strides=[1] + [2] * (len(widths) - 1))
    if encoder.startswith(TV_PREFIX):
        if in_channels != 3:
            raise ValueError(f"{encoder} reads RGB images: in_channels must be 3, got {in_channels}")
        model = torchvision_model(encoder.removeprefix(TV_PREFIX), pretrained)
        if hasattr(model, "features"):  # VGG, EfficientNet, MobileNet, DenseNet, ConvNeXt
            return model.features
        if hasattr(model, "layer4"):  # ResNet, ResNeXt, Wide ResNet: everything before the pooling
            return nn.Sequential(*list(model.children())[:-2])
        raise ValueError(f"{encoder}: no convolutional trunk found (a .features or .layer4 module)")
    if not timm.is_model(encoder):
        close = difflib.get_close_matches(encoder, ["conv", *timm.list_models()], n=3)
        raise ValueError(
            f"Unknown encoder {encoder!r}; give 'conv', 'tv:<torchvision name>' or a timm model name"
            + (f" (close: {', '.join(close)})" if close else "")
        )
    if pretrained:
        return timm_from_cache(encoder, in_channels)
    return timm.create_model(encoder, pretrained=False, num_classes=0, in_chans=in_channels)


class ImageTokens(nn.Module):
    """An image trunk and a linear projection of its feature grid to ``dim``-wide tokens, with a learned position
    embedding per grid cell: ``(B, C, H, W) -> (B, rows * columns, dim)``.

    Args:
        encoder: the trunk, see :func:`build_trunk`.
        in_channels: image channels.
        img_size: image height and width (the grid is measured on it once).
        dim: token width.
        widths: channels of the ``"conv"`` trunk's stages.
        pretrained: load the trunk's pretrained weights from the local cache.
        weights_path: a state-dict file for the trunk.
        freeze: train no trunk weight and keep its normalization statistics (the trunk stays in eval mode).
    """

    def __init__(
        self,
        encoder: str,
        in_channels: int,
        img_size: tuple[int, int],
        dim: int,
        widths: Sequence[int] = (32, 64, 128),
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze: bool = False,
    ) -> None:
        super().__init__()
        self.trunk = build_trunk(encoder, in_channels, widths, pretrained)
        if weights_path:
            load_weights_file(self.trunk, weights_path)
        self.prefix_tokens = int(getattr(self.trunk, "num_prefix_tokens", 0))  # a ViT's class token
        was_training = self.trunk.training
        with torch.no_grad():
            features = self._grid_features(self.trunk.eval(), torch.zeros(1, in_channels, *img_size))
        self.trunk.train(was_training)
        if features.ndim == 4:
            self.grid, channels = tuple(features.shape[2:]), features.shape[1]
        else:  # tokens of a square patch grid
            side = math.isqrt(features.shape[1])
            if side * side != features.shape[1]:
                raise ValueError(f"{encoder} gives {features.shape[1]} tokens, not a square grid")
            self.grid, channels = (side, side), features.shape[2]
        self.proj = nn.Linear(channels, dim)
        self.position = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.norm = nn.LayerNorm(dim)
        self.freeze = freeze
        if freeze:
            self.trunk.requires_grad_(False)

    def _grid_features(self, trunk: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The trunk's unpooled features: a grid ``(B, C, h, w)`` or tokens ``(B, N, C)`` (prefix tokens dropped)."""
        features = trunk.forward_features(images) if hasattr(trunk, "forward_features") else trunk(images)
        if features.ndim not in (3, 4):
            raise ValueError(f"the trunk gives features of shape {tuple(features.shape)}; a grid or tokens are needed")
        return features[:, self.prefix_tokens :] if features.ndim == 3 else features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self._grid_features(self.trunk, images)
        if features.ndim == 4:
            features = features.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)
        return self.norm(self.proj(features) + self.position)

    def train(self, mode: bool = True) -> ImageTokens:
        super().train(mode)
        if self.freeze:
            self.trunk.eval()
        return self


class LSTMAttentionDecoder(nn.Module):
    """A ``num_layers`` LSTM whose top state queries the image tokens with multi-head attention at each word; the
    word is predicted from the state and what it attended to, which is also fed to the next step (input feeding).

    Args:
        vocab_size: words.
        dim: token and word-embedding width.
        hidden_size: LSTM state size.
        num_layers: LSTM layers.
        num_heads: attention heads.
        dropout: dropout between LSTM layers and on the attentional state.
    """

    def __init__(
        self, vocab_size: int, dim: int, hidden_size: int, num_layers: int = 2, num_heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.embed = nn.Embedding(vocab_size, dim)
        self.init_state = nn.Linear(dim, 2 * num_layers * hidden_size)  # h and c of every layer from the mean token
        self.lstm = nn.LSTM(
            2 * dim, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0
        )
        self.query = nn.Linear(hidden_size, dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.combine = nn.Linear(hidden_size + dim, dim)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, vocab_size)

    def start(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(h, c)`` ``(B, layers, hidden)`` from the mean image token, and a zero attentional state ``(B, dim)``;
        batch first, so beam search reorders every part alike."""
        h, c = torch.tanh(self.init_state(tokens.mean(1))).view(-1, 2, self.num_layers, self.hidden_size).unbind(1)
        return h, c, tokens.new_zeros(tokens[:, 0].shape)

    def _advance(
        self,
        tokens: torch.Tensor,
        token: torch.Tensor,
        hc: tuple[torch.Tensor, torch.Tensor],
        feed: torch.Tensor,
        need_weights: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """One word with ``hc`` in ``nn.LSTM``'s ``(layers, B, hidden)`` layout: logits, states, attentional state
        and (when asked) the attention weights ``(B, heads, 1, N)``."""
        out, hc = self.lstm(torch.cat([self.embed(token), feed], dim=-1).unsqueeze(1), hc)
        context, weights = self.attn(self.query(out), tokens, need_weights=need_weights)  # (B, 1, D)
        feed = self.drop(torch.tanh(self.combine(torch.cat([out[:, 0], context[:, 0]], dim=-1))))
        return self.head(feed), hc, feed, weights

    def step(
        self, tokens: torch.Tensor, token: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """Logits ``(B, V)`` after ``token`` ``(B,)``, the new state, and the attention ``(B, N)`` (mean of heads)."""
        h, c, feed = state
        hc = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
        logits, (h, c), feed, weights = self._advance(tokens, token, hc, feed, need_weights=True)
        return logits, (h.transpose(0, 1), c.transpose(0, 1), feed), weights.mean(1)[:, 0]

    def forward(self, tokens: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)`` (the recurrence runs word by word: each reads the last attention;
        the states stay in the LSTM's own layout and attention uses the fused kernel)."""
        h, c, feed = self.start(tokens)
        hc, logits = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()), []
        for token in tgt_in.unbind(1):
            step_logits, hc, feed, _ = self._advance(tokens, token, hc, feed, need_weights=False)
            logits.append(step_logits)
        return torch.stack(logits, dim=1)


class TransformerCaptionDecoder(nn.Module):
    """Pre-norm decoder blocks (causal self-attention, cross-attention to the image tokens, an MLP) over word
    embeddings with learned positions; the head shares the embedding's weights.

    Args:
        vocab_size: words.
        dim: model width.
        depth: blocks.
        num_heads: attention heads.
        max_length: the longest input (positions).
        mlp_ratio: MLP width over ``dim``.
        dropout: attention and residual dropout.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        max_length: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Embedding(max_length, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        init_gpt2(self, depth, std=dim**-0.5)
        self.head.weight = self.embed.weight

    def _embed(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        positions = torch.arange(offset, offset + ids.shape[1], device=ids.device)
        return self.drop(self.embed(ids) + self.position(positions))

    def start(self, tokens: torch.Tensor) -> list[KVCache]:
        """An empty self-attention cache per block."""
        return [KVCache() for _ in self.blocks]

    def step(
        self, tokens: torch.Tensor, token: torch.Tensor, caches: list[KVCache]
    ) -> tuple[torch.Tensor, list[KVCache], torch.Tensor]:
        """Logits ``(B, V)`` after ``token`` ``(B,)`` with the earlier words' keys and values from ``caches``, and
        the last block's cross-attention ``(B, N)`` (mean of heads)."""
        x = self._embed(token.unsqueeze(1), caches[0].length)
        for block, cache in zip(self.blocks, caches, strict=True):
            x, weights = block(x, tokens, cache=cache, need_weights=True)
        return self.head(self.norm(x))[:, 0], caches, weights.mean(1)[:, 0]

    def forward(self, tokens: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)``, every position at once."""
        x = self._embed(tgt_in)
        for block in self.blocks:
            x, _ = block(x, tokens)
        return self.head(self.norm(x))


class ImageCaptioner(CaptioningTask):
    """An image encoder's token grid read by an LSTM-with-attention or a Transformer decoder.

    Args:
        vocab: the words by id (linked from the datamodule).
        max_length: the longest caption in words (linked).
        in_channels: image channels (linked).
        img_size: image height and width (linked).
        encoder: ``"conv"``, ``"tv:<torchvision name>"`` or a timm model name, see :func:`build_trunk`.
        encoder_widths: channels of the ``"conv"`` encoder's stages (each after the first halves the grid).
        pretrained: the encoder's pretrained weights from the local cache.
        weights_path: a state-dict file for the encoder's trunk.
        freeze_encoder: train the decoder (and the token projection) only.
        decoder: ``"lstm"`` or ``"transformer"``.
        embed_dim: token, word-embedding and Transformer width.
        depth: decoder layers (LSTM layers or Transformer blocks).
        num_heads: attention heads.
        hidden_size: the LSTM's state size.
        mlp_ratio: the Transformer blocks' MLP width over ``embed_dim``.
        dropout: decoder dropout.
        **task_args: ``label_smoothing``, ``decoding``, ``beam_size``, ``length_alpha``, ``temperature``,
            ``image_blind``, optimizer and schedule, see :class:`~zoo.tasks.captioning.CaptioningTask`.

    >>> model = ImageCaptioner(img_size=16, encoder_widths=(8, 16), embed_dim=16, num_heads=2, depth=1)
    >>> model.generate(torch.randn(2, 1, 16, 16)).shape[0]
    2
    """

    def __init__(
        self,
        vocab: Sequence[str] = DEFAULT_VOCAB,
        max_length: int = 16,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 32,
        encoder: str = "conv",
        encoder_widths: Sequence[int] = (32, 64, 128),
        pretrained: bool = False,
        weights_path: str | None = None,
        freeze_encoder: bool = False,
        decoder: DecoderName = "transformer",
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        hidden_size: int = 256,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        **task_args: Any,
    ) -> None:
        super().__init__(vocab=vocab, max_length=max_length, in_channels=in_channels, img_size=img_size, **task_args)
        if decoder not in ("lstm", "transformer") or depth < 1:
            raise ValueError(f"decoder must be 'lstm' or 'transformer' with depth >= 1, got {decoder!r}, {depth}")
        self.encoder = ImageTokens(
            encoder, in_channels, self.img_size, embed_dim, encoder_widths, pretrained, weights_path, freeze_encoder
        )
        if decoder == "lstm":
            self.decoder = LSTMAttentionDecoder(self.vocab_size, embed_dim, hidden_size, depth, num_heads, dropout)
        else:
            self.decoder = TransformerCaptionDecoder(
                self.vocab_size, embed_dim, depth, num_heads, max_length + 2, mlp_ratio, dropout
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.encoder.grid

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The image tokens ``(B, N, embed_dim)`` the decoder reads."""
        self.check_input(images)
        return self.encoder(images)

    def encode(self, images: torch.Tensor) -> Memory:
        return (self.encoder(images),)

    def decoder_state(self, memory: Memory) -> Any:
        return self.decoder.start(memory[0])

    def decode_step(
        self, memory: Memory, token: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        return self.decoder.step(memory[0], token, state)

    def decode(self, memory: Memory, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decoder(memory[0], tgt_in)


def _test_preset(decoder: DecoderName) -> dict[str, Any]:
    lstm = decoder == "lstm"
    return dict(
        img_size=16, encoder_widths=[8, 16], decoder=decoder, embed_dim=32 if lstm else 16, depth=2 if lstm else 1,
        num_heads=2, hidden_size=32, dropout=0.0, max_length=4,
    )  # fmt: skip


@register_model(
    ImageCaptioner,
    input_size=(1, 16, 16),
    num_params=37_479,
    source="tiny conv encoder and LSTM-with-attention decoder for fast tests",
    task="captioning",
)
def caption_lstm_test() -> dict[str, Any]:
    """Conv 8, 16 (an 8x8 grid of 32-wide tokens), two LSTM layers of 32, 2 heads."""
    return _test_preset("lstm")


@register_model(
    ImageCaptioner,
    input_size=(1, 16, 16),
    num_params=7_368,
    source="tiny conv encoder and Transformer decoder for fast tests",
    task="captioning",
)
def caption_transformer_test() -> dict[str, Any]:
    """Conv 8, 16 (an 8x8 grid of 16-wide tokens), one decoder block of width 16, 2 heads."""
    return _test_preset("transformer")


@register_model(
    ImageCaptioner,
    input_size=(1, 32, 32),
    num_params=1_454_703,
    source="Show, Attend and Tell (Xu et al., 2015) layout: a conv grid read by a 2-layer LSTM with attention",
    task="captioning",
)
def caption_lstm_digits() -> dict[str, Any]:
    """Conv 32, 64, 128 to an 8x8 grid of 128-wide tokens; 2 LSTM layers of 256 with 4-head attention."""
    return dict(encoder_widths=[32, 64, 128], decoder="lstm", embed_dim=128, depth=2, num_heads=4, hidden_size=256)


@register_model(
    ImageCaptioner,
    input_size=(1, 32, 32),
    num_params=916_064,
    source="conv grid encoder and pre-norm Transformer decoder with cross-attention (Vaswani et al., 2017)",
    task="captioning",
)
def caption_transformer_digits() -> dict[str, Any]:
    """Conv 32, 64, 128 to an 8x8 grid of 128-wide tokens; 3 decoder blocks of width 128, 4 heads."""
    return dict(encoder_widths=[32, 64, 128], decoder="transformer", embed_dim=128, depth=3, num_heads=4)


@register_model(
    ImageCaptioner,
    input_size=(3, 224, 224),
    num_params=14_491_200,
    source="torchvision ResNet-18 trunk (7x7 grid at 224 pixels) and a Transformer decoder",
    task="captioning",
)
def caption_resnet18_transformer() -> dict[str, Any]:
    """torchvision's ResNet-18 without pooling (512 channels on a 7x7 grid) to 256-wide tokens; 3 decoder blocks,
    8 heads; ``pretrained=True`` reads ImageNet weights from the torch hub cache, ``freeze_encoder=True`` keeps them."""
    return dict(
        in_channels=3, img_size=224, encoder="tv:resnet18", decoder="transformer", embed_dim=256, depth=3,
        num_heads=8, max_length=20,
    )  # fmt: skip
