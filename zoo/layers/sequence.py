"""Padding masks and pooling over the valid steps of padded sequence batches."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PoolingName = Literal["last", "mean", "max", "attention"]


def lengths_to_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, T)`` bool mask, True at the valid steps ``t < lengths[b]``.

    >>> lengths_to_mask(torch.tensor([1, 3]), 3).int().tolist()
    [[1, 0, 0], [1, 1, 1]]
    """
    return torch.arange(max_length, device=lengths.device) < lengths.unsqueeze(1)


class SequencePooling(nn.Module):
    """Pools ``(B, T, D)`` states over valid steps only: the last one, their mean, max, or an attention average.

    ``attention`` learns one score per step (a linear layer) and averages the states by their softmax over the
    valid steps (Bahdanau-style attention pooling). Padded steps never contribute.

    Args:
        mode: ``"last"``, ``"mean"``, ``"max"`` or ``"attention"``.
        dim: the state size ``D`` (for the attention scores).
    """

    def __init__(self, mode: PoolingName = "last", dim: int = 0) -> None:
        super().__init__()
        if mode not in ("last", "mean", "max", "attention"):
            raise ValueError(f"Unknown pooling {mode!r}; choose from 'last', 'mean', 'max', 'attention'.")
        self.mode = mode
        self.score = nn.Linear(dim, 1) if mode == "attention" else None

    def forward(self, states: torch.Tensor, lengths: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, D)`` from ``states (B, T, D)`` and ``lengths (B,)``; ``last`` replaces the gathered last states
        (a bidirectional RNN's final states: the backward direction ends at step 0)."""
        if self.mode == "last":
            if last is not None:
                return last
            index = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.shape[-1])
            return states.gather(1, index).squeeze(1)  # (B, D)
        mask = lengths_to_mask(lengths, states.shape[1]).unsqueeze(-1)  # (B, T, 1)
        if self.mode == "mean":
            return (states * mask).sum(1) / lengths.clamp(min=1).unsqueeze(-1).to(states.dtype)
        if self.mode == "max":
            return states.masked_fill(~mask, float("-inf")).amax(1)
        scores = self.score(states).masked_fill(~mask, float("-inf"))  # (B, T, 1)
        return (scores.softmax(dim=1) * states).sum(1)
