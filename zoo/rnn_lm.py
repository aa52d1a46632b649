"""A character-level LSTM language model (Graves, 2013; Karpathy's char-rnn): the recurrent baseline beside GPT.

:class:`LSTMLanguageModel` embeds ids, runs a stacked LSTM (:class:`~zoo.rnn.RNNEncoder`'s layers and
initialization) and maps every step's state to next-token logits, on the language-modelling task. Training reads
windows of ``block_size`` from a zero state; generation carries the recurrent state from token to token, so one
new token costs one step and samples may run past ``block_size``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.registry import InputSpec, register_model
from zoo.rnn import RNNEncoder
from zoo.tasks.language_model import LanguageModel

State = tuple[torch.Tensor, torch.Tensor]


class LSTMLanguageModel(LanguageModel):
    """Embedding, stacked LSTM, dropout and a linear head over the vocabulary.

    Args:
        vocab: the vocabulary's characters (linked from the datamodule); ``""`` with ``vocab_size`` for bare ids.
        vocab_size: number of token ids (from ``vocab`` when given).
        block_size: the training window (and the longest input of one call).
        embed_dim: token embedding size.
        hidden_size: LSTM state size.
        num_layers: stacked LSTM layers.
        dropout: dropout between layers and before the head.
        **task_args: ``warmup_steps``, optimizer and schedule, see :class:`~zoo.tasks.language_model.LanguageModel`.

    >>> model = LSTMLanguageModel(vocab="abc", block_size=8, embed_dim=8, hidden_size=16)
    >>> model(model.encode("abca").unsqueeze(0)).shape
    torch.Size([1, 4, 3])
    """

    overfit_lr = 1e-2  # small recurrent nets need a few hundred steps at 1e-3

    def __init__(
        self,
        vocab: str = "",
        vocab_size: int = 0,
        block_size: int = 64,
        embed_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        **task_args: Any,
    ) -> None:
        super().__init__(vocab=vocab, vocab_size=vocab_size, block_size=block_size, **task_args)
        self.encoder = RNNEncoder("lstm", self.vocab_size, 1, embed_dim, hidden_size, num_layers, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.vocab_size)

    def forward_with_state(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits ``(B, T, V)`` and the final ``(h, c)`` state, continuing from ``state``."""
        self.check_input(x)
        states, state = self.encoder.rnn(self.encoder.embed(x), state)  # (B, T, H)
        return self.head(self.drop(states)), state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` from a zero state."""
        return self.forward_with_state(x)[0]

    def next_token_logits(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One LSTM step on the newest token, from the carried state (the whole prompt on the first call)."""
        if state is None:
            logits, carried = self.forward_with_state(ids[:, -self.block_size :])
        else:
            logits, carried = self.forward_with_state(ids[:, -1:], state)
        return logits[:, -1], carried


@register_model(
    LSTMLanguageModel,
    input_size=InputSpec((16,), kind="tokens", dtype=torch.long, vocab_size=16),
    num_params=7_184,
    source="tiny LSTM language model for fast tests",
    task="language_modeling",
)
def lstm_lm_test() -> dict[str, Any]:
    """One LSTM layer of 32 over 16 ids, windows of 16."""
    return dict(vocab_size=16, block_size=16, embed_dim=16, hidden_size=32, num_layers=1)


@register_model(
    LSTMLanguageModel,
    input_size=InputSpec((64,), kind="tokens", dtype=torch.long, vocab_size=65),
    num_params=876_929,
    source="char-rnn LSTM (Graves, 2013; Karpathy, 2015) at Tiny Shakespeare size",
    task="language_modeling",
)
def lstm_shakespeare_char() -> dict[str, Any]:
    """Two LSTM layers of 256 over Tiny Shakespeare's 65 characters, windows of 64."""
    return dict(vocab_size=65, block_size=64, embed_dim=64, hidden_size=256, num_layers=2)
