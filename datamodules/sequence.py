"""Shared machinery of the sequence datamodules: padded batches with lengths, in-memory datasets and splits.

A batch is a :class:`SequenceBatch` ``(inputs, targets, lengths)``: token ids ``(B, T)`` (long) or features
``(B, T, F)`` (float), zero-padded after each sequence's ``lengths[b]`` steps; targets are ``(B,)`` class indices
or ``(B, T)`` per-step tags padded with ``-100``. Fixed-length data (sequential MNIST) is sliced as one tensor.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SavesPreprocessing, SplitLoaders, check_batch_and_split, make_loader, split_indices

#: Target of padded steps in tagging batches (what cross-entropy ignores by default).
IGNORE_INDEX = -100
SplitName = Literal["random", "chronological"]


class SequenceBatch(NamedTuple):
    """A padded batch: ``inputs`` ``(B, T[, F])``, ``targets`` ``(B,)`` or ``(B, T)``, ``lengths`` ``(B,)``."""

    inputs: torch.Tensor
    targets: torch.Tensor
    lengths: torch.Tensor


def pad_collate(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> SequenceBatch:
    """Pad ``(sequence, target)`` samples to the longest: inputs with 0, per-step targets with ``-100``.

    >>> batch = pad_collate([(torch.tensor([1, 2, 3]), torch.tensor(0)), (torch.tensor([4]), torch.tensor(1))])
    >>> batch.inputs.tolist(), batch.lengths.tolist()
    ([[1, 2, 3], [4, 0, 0]], [3, 1])
    """
    sequences, targets = zip(*samples, strict=True)
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    inputs = pad_sequence(list(sequences), batch_first=True)
    if targets[0].ndim == 0:
        target = torch.stack(list(targets))
    else:
        target = pad_sequence(list(targets), batch_first=True, padding_value=IGNORE_INDEX)
    return SequenceBatch(inputs, target, lengths)


class SequenceDataset(Dataset):
    """Sequences with a target each: one tensor ``(N, T[, F])`` (fixed length) or a list of ``(T_i[, F])``.

    Checked once at construction, so bad data fails before training: every sequence has at least one step and
    at most ``max_length``, token ids are integers in ``[0, vocab_size)``, features are floats of
    ``in_features``, and targets are class indices in ``[0, num_classes)`` (``-100`` allowed per step).
    Fixed-length data is sliced a batch at a time (``__getitems__``), like the in-memory image datasets.
    """

    def __init__(
        self,
        sequences: torch.Tensor | Sequence[torch.Tensor],
        targets: torch.Tensor | Sequence[torch.Tensor],
        num_classes: int,
        vocab_size: int = 0,
        in_features: int = 1,
        max_length: int = 0,
        name: str = "sequences",
    ) -> None:
        if len(sequences) != len(targets):
            raise ValueError(f"{name}: {len(sequences)} sequences but {len(targets)} targets")
        self.fixed = isinstance(sequences, torch.Tensor)
        self.sequences, self.targets = sequences, targets
        _check_sequences(sequences, vocab_size, in_features, max_length, name)
        flat = (
            torch.as_tensor(targets).flatten()
            if self.fixed
            else torch.cat([torch.as_tensor(t).flatten() for t in targets])
        )
        flat = flat[flat != IGNORE_INDEX]
        if flat.numel():
            low, high = torch.stack(flat.aminmax()).tolist()
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"{name}: targets must be class indices in [0, {num_classes - 1}] (num_classes={num_classes}), "
                    f"got values in [{low}, {high}]"
                )

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sequences[index], torch.as_tensor(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> SequenceBatch | list[tuple[torch.Tensor, torch.Tensor]]:
        if not self.fixed:
            return [self[index] for index in indices]
        index = torch.as_tensor(indices)
        inputs = self.sequences[index]
        return SequenceBatch(inputs, self.targets[index], torch.full((len(index),), inputs.shape[1]))


def _check_sequences(
    sequences: torch.Tensor | Sequence[torch.Tensor], vocab_size: int, in_features: int, max_length: int, name: str
) -> None:
    """Lengths, dtype, feature count and token range of every sequence at once; errors name the first bad one."""
    if isinstance(sequences, torch.Tensor):
        values, lengths, where = sequences, torch.full((len(sequences),), sequences.shape[1]), lambda i: name
    else:
        values = torch.cat(list(sequences)) if len(sequences) else torch.zeros(0)
        lengths, where = torch.tensor([len(s) for s in sequences]), lambda i: f"{name}[{i}]"
    if (lengths == 0).any():
        index = int((lengths == 0).nonzero()[0])
        raise ValueError(f"{where(index)}: empty sequence; every sequence needs at least one step")
    if max_length and (lengths > max_length).any():
        index = int((lengths > max_length).nonzero()[0])
        raise ValueError(f"{where(index)}: {int(lengths[index])} steps, more than max_length={max_length}")
    if vocab_size:
        if values.is_floating_point():
            raise ValueError(f"{name}: token ids must be integers (torch.long), got {values.dtype}")
        if values.numel() and not ((values >= 0) & (values < vocab_size)).all():
            raise ValueError(f"{name}: token ids must be in [0, {vocab_size - 1}]")
    elif not values.is_floating_point() or values.shape[-1] != in_features:
        raise ValueError(
            f"{name}: expected float features with {in_features} per step, got {values.dtype} {tuple(values.shape)}"
        )


def _collate(batch: SequenceBatch | list[tuple[torch.Tensor, torch.Tensor]]) -> SequenceBatch:
    return batch if isinstance(batch, SequenceBatch) else pad_collate(batch)


def split_positions(n: int, val_fraction: float, seed: int, split: SplitName) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of ``range(n)``: random by ``seed``, or ``chronological`` (validation is the last part,
    so nothing from after the training span is trained on)."""
    if split == "random":
        return split_indices(n, val_fraction, seed)
    if split != "chronological":
        raise ValueError(f"Unknown split {split!r}; choose 'random' or 'chronological'.")
    n_val = round(n * val_fraction)
    return torch.arange(n - n_val), torch.arange(n - n_val, n)


class SequenceDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of the sequence datamodules.

    Subclasses set ``num_classes``, ``vocab_size`` (0 for float features), ``in_features`` and ``max_length``
    (attributes the CLI links into the model) and implement :meth:`load_sequences`.

    Args:
        data_dir: folder the dataset is read from (unused by generated data).
        batch_size: sequences per batch.
        val_fraction: fraction of the training sequences held out for validation.
        split: ``"random"`` (by ``seed``) or ``"chronological"`` (the last part validates; for ordered data).
        num_workers: loader worker processes (in-memory data needs none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        seed: seed of the split (and of generated data).
    """

    num_classes: int
    vocab_size: int = 0
    in_features: int = 1
    max_length: int = 0

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split: SplitName = "random",
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, val_fraction)
        if split not in ("random", "chronological"):
            raise ValueError(f"Unknown split {split!r}; choose 'random' or 'chronological'.")
        # The subclass's own arguments (Lightning reads the outermost __init__); not logged, as for images.
        self.save_hyperparameters(logger=False)
        self.data_dir = os.path.expanduser(data_dir)
        self.batch_size, self.val_fraction, self.split, self.seed = batch_size, val_fraction, split, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.datasets: dict[str, SequenceDataset] = {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Token ids below ``vocab_size``, or float series of ``in_features`` taken as they are."""
        if self.vocab_size:
            return {"input": "tokens", "vocab_size": self.vocab_size, "max_length": self.max_length}
        return {"input": "series", "in_features": self.in_features, "max_length": self.max_length}

    def load_sequences(
        self, train: bool
    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
        """Sequences and targets of the train or test split."""
        raise NotImplementedError

    def _dataset(self, sequences, targets, name: str) -> SequenceDataset:
        return SequenceDataset(
            sequences, targets, self.num_classes, self.vocab_size, self.in_features, self.max_length, name
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and "train" not in self.datasets:
            sequences, targets = self.load_sequences(train=True)
            train_idx, val_idx = split_positions(len(sequences), self.val_fraction, self.seed, self.split)
            for split, index in (("train", train_idx), ("val", val_idx)):
                if isinstance(sequences, torch.Tensor):
                    subset = sequences[index], targets[index]
                else:
                    subset = [sequences[i] for i in index], [targets[i] for i in index]
                self.datasets[split] = self._dataset(*subset, name=f"{type(self).__name__} {split} split")
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = self._dataset(
                *self.load_sequences(train=False), name=f"{type(self).__name__} test split"
            )

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (or setup() was not called)")
        return make_loader(self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory, _collate)
