"""An LSTM encoder-decoder with attention (Bahdanau et al., 2015; Luong et al., 2015) and scheduled teacher forcing.

The encoder is a (bidirectional) :class:`~zoo.rnn.RNNEncoder` over the packed source. The decoder is an
``LSTMCell`` with input feeding (Luong): each step reads the previous token's embedding and the previous attentional
state, attends over the encoder states with Luong's "general" score ``h W s`` (padded source steps masked), and
predicts from ``tanh(W [h; context])``. During training, each decoder input is the gold token with probability
``teacher_forcing_ratio`` and the model's own previous prediction otherwise (Bengio et al., 2015).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.layers.sequence import lengths_to_mask
from zoo.registry import InputSpec, register_model
from zoo.rnn import RNNEncoder
from zoo.tasks.seq2seq import Memory, Seq2SeqTask


class LSTMSeq2Seq(Seq2SeqTask):
    """LSTM encoder, attentional LSTM decoder, one embedding shared by source and target.

    Args:
        vocab: the characters of sources and targets (linked from the datamodule).
        max_length: the longest source (linked); answers are decoded up to ``max_length + 1`` tokens.
        embed_dim: token embedding size.
        hidden_size: encoder state size per direction and decoder state size.
        num_layers: encoder layers.
        bidirectional: a backward encoder direction too.
        teacher_forcing_ratio: probability of feeding the gold previous token in training (1: always).
        dropout: dropout on the attentional state.
        **task_args: ``label_smoothing``, ``decoding``, ``beam_size``, optimizer and schedule, see
            :class:`~zoo.tasks.seq2seq.Seq2SeqTask`.

    >>> model = LSTMSeq2Seq(vocab="ab", max_length=6, embed_dim=8, hidden_size=16)
    >>> model(torch.tensor([[3, 4, 4]]), tgt_in=torch.tensor([[1, 4]])).shape
    torch.Size([1, 2, 5])
    """

    overfit_lr = 1e-2  # small recurrent nets need a few hundred steps at 1e-3

    def __init__(
        self,
        vocab: str = "0123456789",
        max_length: int = 16,
        embed_dim: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        teacher_forcing_ratio: float = 1.0,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        if not 0 <= teacher_forcing_ratio <= 1:
            raise ValueError(f"teacher_forcing_ratio must be in [0, 1], got {teacher_forcing_ratio}")
        super().__init__(vocab=vocab, max_length=max_length, **task_args)
        self.encoder = RNNEncoder(
            "lstm", self.vocab_size, 1, embed_dim, hidden_size, num_layers, bidirectional, dropout=dropout
        )
        source_size = self.encoder.output_size
        self.init_state = nn.Linear(source_size, hidden_size)
        self.cell = nn.LSTMCell(embed_dim + hidden_size, hidden_size)
        self.score = nn.Linear(source_size, hidden_size, bias=False)  # Luong's general score h W s
        self.combine = nn.Linear(hidden_size + source_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.vocab_size)
        self._attention: list[torch.Tensor] = []

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        """``(states (B, S, dirs*H), keys (B, S, H), padding (B, S), h0 (B, H))``."""
        states, last = self.encoder(src, src_lengths)
        padding = ~lengths_to_mask(src_lengths, src.shape[1])
        return states, self.score(states), padding, torch.tanh(self.init_state(last))

    def decode(self, memory: Memory, tgt_in: torch.Tensor) -> torch.Tensor:
        states, keys, padding, h = memory
        c = torch.zeros_like(h)
        feed = torch.zeros_like(h)  # the previous attentional state (input feeding)
        sample = self.training and self.hparams.teacher_forcing_ratio < 1
        token, logits, weights = tgt_in[:, 0], [], []
        for step in range(tgt_in.shape[1]):
            if step and sample:  # scheduled sampling: the gold token, or the model's own previous prediction
                gold = torch.rand(token.shape, device=token.device) < self.hparams.teacher_forcing_ratio
                token = torch.where(gold, tgt_in[:, step], logits[-1].argmax(-1))
            elif step:
                token = tgt_in[:, step]
            h, c = self.cell(torch.cat([self.encoder.embed(token), feed], dim=-1), (h, c))
            scores = torch.einsum("bh,bsh->bs", h, keys).masked_fill(padding, float("-inf"))
            attention = scores.softmax(-1)  # (B, S)
            context = torch.einsum("bs,bsd->bd", attention, states)
            feed = self.drop(torch.tanh(self.combine(torch.cat([h, context], dim=-1))))
            logits.append(self.head(feed))
            weights.append(attention)
        self._attention = weights
        return torch.stack(logits, dim=1)  # (B, T, V)

    @torch.no_grad()
    def attention_maps(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The decoder's attention ``(B, 1, T, S)`` over the source while writing the greedy answer."""
        src_lengths = self.check_input(src, src_lengths)
        answer = self.generate(src, src_lengths)
        self.decode(self.encode(src, src_lengths), self.decoder_inputs(answer))
        maps = {"cross": torch.stack(self._attention, dim=1).unsqueeze(1)}
        self._attention = []
        return maps


@register_model(
    LSTMSeq2Seq,
    input_size=InputSpec((8,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=13),
    num_params=9_805,
    source="tiny attentional LSTM encoder-decoder for fast tests",
    task="seq2seq",
)
def lstm_seq2seq_test() -> dict[str, Any]:
    """A bidirectional LSTM encoder of 16 per direction, a decoder of 16, over digit strings of up to 8."""
    return dict(vocab="0123456789", max_length=8, embed_dim=16, hidden_size=16)


@register_model(
    LSTMSeq2Seq,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, variable_length=True, vocab_size=13),
    num_params=431_405,
    source="attentional LSTM encoder-decoder (Luong et al., 2015) on digit strings",
    task="seq2seq",
)
def lstm_seq2seq_attn() -> dict[str, Any]:
    """A bidirectional LSTM encoder of 128 per direction, an attentional decoder of 128, digit strings up to 16."""
    return dict(vocab="0123456789", max_length=16, embed_dim=32, hidden_size=128)
