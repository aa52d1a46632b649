"""Sequence task bases: one label per sequence (:class:`SequenceClassifier`) or per step (:class:`SequenceTagger`).

Batches are ``(inputs, targets)`` or ``(inputs, targets, lengths)``: ``inputs`` are token ids ``(B, T)`` (a model
with ``vocab_size > 0``) or float features ``(B, T, in_features)``, padded after each sequence's ``lengths[b]``
steps (``datamodules.SequenceBatch`` is such a tuple). Networks implement ``forward(x, lengths=None)``; without
``lengths`` every sequence is taken at full length, so a model also runs as a plain ``nn.Module`` on ``model(x)``.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.layers import PoolingName
from zoo.tasks.classification import ClassificationTask, LossName

#: Target value of padded steps in tagging batches (PyTorch's cross-entropy default).
IGNORE_INDEX = -100


class _SequenceTask(ClassificationTask):
    """Input sizes and checks shared by the sequence tasks."""

    data_links = ("num_classes", "vocab_size", "in_features", "max_length")
    overfit_lr = 1e-2  # small recurrent nets need a few hundred steps at 1e-3

    def __init__(
        self,
        num_classes: int = 2,
        vocab_size: int = 0,
        in_features: int = 1,
        max_length: int = 0,
        loss: LossName = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        **optim_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes, loss=loss, label_smoothing=label_smoothing, focal_gamma=focal_gamma, **optim_args
        )
        if vocab_size < 0 or in_features < 1 or max_length < 0:
            raise ValueError(
                f"vocab_size and max_length must be >= 0 and in_features >= 1, got {vocab_size}, {in_features}, "
                f"{max_length}"
            )
        self.vocab_size, self.in_features, self.max_length = vocab_size, in_features, max_length
        shape = (2, self.example_steps) if vocab_size else (2, self.example_steps, in_features)
        self.example_input_array = torch.zeros(shape, dtype=torch.long if vocab_size else torch.float32)

    def preprocessing(self) -> dict[str, Any]:
        if self.vocab_size:
            return {"input": "tokens", "vocab_size": self.vocab_size}
        return {"input": "series", "in_features": self.in_features}

    @property
    def example_steps(self) -> int:
        """Length of the example inputs: ``max_length`` when short, else 16."""
        return self.max_length if 0 < self.max_length <= 32 else 16

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Features ``(B, num_features)`` per sequence, or ``(B, T, num_features)`` per step."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        try:
            features = self.forward_features(x, lengths)
        except IndexError:
            self.check_token_ids(x)  # an id outside the embedding; checked only then, as it would sync every step
            raise
        return self.forward_head(features)

    def unpack_batch(self, batch: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``(x, lengths)`` and the targets of ``(x, target[, lengths])``."""
        if len(batch) == 3:
            x, target, lengths = batch
            return (x, lengths), target
        x, target = batch
        return (x,), target

    def check_input(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Raise a ValueError naming what is expected; returns ``lengths`` (full length when ``None``)."""
        name = type(self).__name__
        if self.vocab_size:
            if x.ndim != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(
                    f"{name} expects token ids of shape (B, T) and dtype torch.long, got {x.dtype} {tuple(x.shape)}"
                )
        elif x.ndim != 3 or x.shape[-1] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"{name} expects float features of shape (B, T, {self.in_features}), got {x.dtype} {tuple(x.shape)}"
            )
        batch, steps = x.shape[:2]
        if steps == 0:
            raise ValueError(f"{name} got empty sequences (T=0)")
        if self.max_length and steps > self.max_length:
            raise ValueError(f"{name} takes sequences of at most max_length={self.max_length} steps, got T={steps}")
        if lengths is None:
            return torch.full((batch,), steps, dtype=torch.long, device=x.device)
        if lengths.shape != (batch,):
            raise ValueError(f"{name} expects lengths of shape ({batch},), got {tuple(lengths.shape)}")
        low, high = torch.stack(lengths.aminmax()).tolist()  # one transfer
        if low < 1 or high > steps:
            empty = (lengths < 1).nonzero().flatten().tolist()
            problem = f"empty sequences at batch positions {empty}" if empty else f"lengths above T={steps}"
            raise ValueError(f"{name} got {problem}; every length must be in [1, {steps}]")
        return lengths

    def check_token_ids(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the valid range when a token id is outside the vocabulary."""
        if self.vocab_size and x.numel():
            low, high = torch.stack(x.aminmax()).tolist()
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"{type(self).__name__} has vocab_size={self.vocab_size}: token ids must be in "
                    f"[0, {self.vocab_size - 1}], got values in [{low}, {high}]"
                )

    def _example_inputs(self, batch_size: int, generator: torch.Generator | None) -> tuple[torch.Tensor, ...]:
        steps = self.example_steps
        if self.vocab_size:
            x = torch.randint(0, self.vocab_size, (batch_size, steps), generator=generator)
        else:
            x = torch.randn(batch_size, steps, self.in_features, generator=generator)
        lengths = torch.randint(max(1, steps // 2), steps + 1, (batch_size,), generator=generator)
        lengths[0] = steps
        return x, lengths


class SequenceClassifier(_SequenceTask):
    """Task base for one label per sequence; subclasses build the network and pool over valid steps only.

    Logs what :class:`~zoo.tasks.classification.ClassificationTask` logs (``{train,val,test}/acc``, ``/f1``, ...).

    Args:
        num_classes: number of classes.
        vocab_size: number of token ids for token inputs; 0 for float features.
        in_features: features per step of float inputs (ignored for tokens).
        max_length: the longest sequence accepted (0: any length).
        pooling: how step states become one vector: ``"last"`` (final state), ``"mean"``, ``"max"`` or
            ``"attention"``, each over the valid steps only.
        **task_args: loss (``"ce"``/``"focal"``), ``label_smoothing``, ``focal_gamma``, optimizer and schedule, see
            :class:`~zoo.tasks.classification.ClassificationTask` and :class:`~zoo.tasks.base.TaskModule`.
    """

    def __init__(
        self,
        num_classes: int = 2,
        vocab_size: int = 0,
        in_features: int = 1,
        max_length: int = 0,
        pooling: PoolingName = "last",
        **task_args: Any,
    ) -> None:
        super().__init__(
            num_classes=num_classes, vocab_size=vocab_size, in_features=in_features, max_length=max_length, **task_args
        )
        self.pooling = pooling

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random sequences of varied lengths and targets cycling over (up to) four classes."""
        x, lengths = self._example_inputs(batch_size, generator)
        return x, torch.arange(batch_size) % min(4, self.num_classes), lengths


class SequenceTagger(_SequenceTask):
    """Task base for one label per step; padded steps (target ``-100``) count in neither loss nor metrics.

    The network returns ``(B, T, num_classes)`` logits. Accuracy and F1 are over the valid steps of the split.

    Args:
        num_classes: number of tags.
        vocab_size: number of token ids for token inputs; 0 for float features.
        in_features: features per step of float inputs (ignored for tokens).
        max_length: the longest sequence accepted (0: any length).
        loss: ``"ce"`` or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    def flatten_outputs(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits ``(N, C)`` and tags ``(N,)`` of the valid steps only."""
        if target.shape != logits.shape[:2]:
            raise ValueError(f"tag targets must have shape {tuple(logits.shape[:2])}, got {tuple(target.shape)}")
        valid = target != IGNORE_INDEX
        return logits[valid], target[valid]

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random sequences whose tag is a rule of the step's input; padded steps tagged ``-100``."""
        x, lengths = self._example_inputs(batch_size, generator)
        classes = min(4, self.num_classes)
        tags = x % classes if self.vocab_size else (x[..., 0] > 0).long() % classes
        steps = torch.arange(x.shape[1])
        return x, tags.masked_fill(steps >= lengths.unsqueeze(1), IGNORE_INDEX), lengths
