"""Regression data: feature vectors ``x`` and real targets ``y = f(x)``.

Batches are ``(x, y)``: features ``(B, F)`` in original units and targets ``(B, T)`` standardized with the training
split's mean and standard deviation (``target_mean``, ``target_std``), so one loss weighs every target alike. The
statistics of both are attributes (``feature_mean``, ``feature_std`` too), linked into the model by the CLI: a
model standardizes its own inputs and answers in original units.

- :class:`FunctionDataModule`: points drawn uniformly from a box and a named test function of them (the textbook's
  2-D surface ``sin 5x cos 5y + 0.5 sin 10x + 0.3 cos 10y`` on ``[-1, 1]^2``), optionally with noise. Generated at
  construction from ``seed``; nothing is read.
- :class:`CSVRegressionDataModule`: the rows of a CSV file, with named target columns and the other numeric
  columns (or the named ones) as features.

>>> dm = FunctionDataModule(num_train=100, num_val=20, num_test=20)
>>> (dm.in_features, dm.out_features), len(dm.datasets["train"])
((2, 1), 100)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.base import (
    SavesPreprocessing,
    SplitLoaders,
    check_batch_and_split,
    check_float32_range,
    make_loader,
    read_csv,
    split_indices,
)

SPLITS = ("train", "val", "test")


def _sin_cos_2d(x: torch.Tensor) -> torch.Tensor:
    a, b = x[:, 0], x[:, 1]
    return torch.sin(5 * a) * torch.cos(5 * b) + 0.5 * torch.sin(10 * a) + 0.3 * torch.cos(10 * b)


def _sinc_1d(x: torch.Tensor) -> torch.Tensor:
    return torch.sinc(3 * x[:, 0] / math.pi)  # sin(3x) / (3x)


#: Named test functions: ``(function of (N, F) points -> (N,), number of features, box)``.
FUNCTIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int, tuple[float, float]]] = {
    "sin_cos_2d": (_sin_cos_2d, 2, (-1.0, 1.0)),
    "sinc_1d": (_sinc_1d, 1, (-5.0, 5.0)),
}


class RegressionDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of the regression datamodules: holds the three splits' tensors and their statistics.

    A subclass calls :meth:`set_splits` with the features ``(N, F)`` and targets ``(N, T)`` of each split in
    original units; statistics come from the training split alone.

    Args:
        batch_size: samples per batch.
        num_workers: loader worker processes (in-memory tensors need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(self, batch_size: int = 128, num_workers: int = 0, pin_memory: bool | None = None) -> None:
        super().__init__()
        check_batch_and_split(batch_size, 0.0)
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.datasets: dict[str, TensorDataset] = {}

    def set_splits(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Standardize the targets with the training split's statistics and keep the three splits."""
        features, targets = splits["train"]
        self._feature_mean, self._feature_std = features.mean(0), features.std(0, correction=0).clamp(min=1e-8)
        self._target_mean, self._target_std = targets.mean(0), targets.std(0, correction=0).clamp(min=1e-8)
        self.datasets = {
            split: TensorDataset(x.float(), ((y - self._target_mean) / self._target_std).float())
            for split, (x, y) in splits.items()
        }

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Feature vectors in original units (the model standardizes them itself)."""
        return {"input": "features", "in_features": self.in_features, "out_features": self.out_features}

    @property
    def in_features(self) -> int:
        """Features per sample."""
        return int(self._feature_mean.numel())

    @property
    def out_features(self) -> int:
        """Targets per sample."""
        return int(self._target_mean.numel())

    @property
    def feature_mean(self) -> list[float]:
        """Each feature's mean over the training split (the model standardizes its inputs with it)."""
        return self._feature_mean.tolist()

    @property
    def feature_std(self) -> list[float]:
        """Each feature's standard deviation over the training split."""
        return self._feature_std.tolist()

    @property
    def target_mean(self) -> list[float]:
        """Each target's mean over the training split (original units = scaled * ``target_std`` + ``target_mean``)."""
        return self._target_mean.tolist()

    @property
    def target_std(self) -> list[float]:
        """Each target's standard deviation over the training split."""
        return self._target_std.tolist()

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return make_loader(self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory)


class FunctionDataModule(RegressionDataModule):
    """Points drawn uniformly from a box and a named test function of them (:data:`FUNCTIONS`).

    Args:
        function: the function's name: ``"sin_cos_2d"`` (the textbook's 2-D surface on ``[-1, 1]^2``) or
            ``"sinc_1d"`` (``sin 3x / 3x`` on ``[-5, 5]``).
        num_train: training points.
        num_val: validation points.
        num_test: test points.
        noise_std: standard deviation of Gaussian noise added to the training and validation targets (the test
            targets stay exact, so the test error is the error of the fitted function).
        batch_size: points per batch.
        seed: seed of the points (and noise); the same seed gives the same data everywhere.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        function: Literal["sin_cos_2d", "sinc_1d"] = "sin_cos_2d",
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 4096,
        noise_std: float = 0.0,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if function not in FUNCTIONS:
            raise ValueError(f"Unknown function {function!r}; choose from {', '.join(FUNCTIONS)}.")
        if min(num_train, num_val, num_test) < 1 or noise_std < 0:
            raise ValueError(f"need at least one point per split and noise_std >= 0, got {num_train}, {num_val}, "
                             f"{num_test} and {noise_std}")  # fmt: skip
        self.save_hyperparameters(logger=False)
        fn, dims, (low, high) = FUNCTIONS[function]
        generator = torch.Generator().manual_seed(seed)
        splits = {}
        for split, count in zip(SPLITS, (num_train, num_val, num_test), strict=True):
            x = low + (high - low) * torch.rand(count, dims, generator=generator, dtype=torch.float64)
            y = fn(x).unsqueeze(1)  # (N, 1)
            if noise_std and split != "test":
                y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=torch.float64)
            splits[split] = (x, y)
        self.set_splits(splits)


class CSVRegressionDataModule(RegressionDataModule):
    """The rows of a CSV file with a header: the ``targets`` columns from the other (or the named) numeric columns.

    The rows are split at random into train, validation and test by ``seed``.

    Args:
        path: the CSV file.
        targets: the target columns.
        features: the feature columns (``None``: every other numeric column).
        val_fraction: fraction of the rows for validation.
        test_fraction: fraction of the rows for testing.
        batch_size: rows per batch.
        seed: seed of the split.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        path: str,
        targets: Sequence[str],
        features: Sequence[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ValueError(f"need positive val_fraction and test_fraction summing below 1, got {val_fraction}, "
                             f"{test_fraction}")  # fmt: skip
        self.save_hyperparameters(logger=False)
        x, y = read_csv_columns(path, list(targets), None if features is None else list(features))
        rest, test = split_indices(len(x), test_fraction, seed)
        train, val = split_indices(len(rest), val_fraction / (1 - test_fraction), seed + 1)
        train, val = rest[train], rest[val]
        self.set_splits({"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])})


def read_csv_columns(
    path: str | os.PathLike[str], targets: list[str], features: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(N, F)`` and targets ``(N, T)`` (float64) from a CSV file with a header.

    Raises:
        FileNotFoundError: naming the file when it is missing.
        ValueError: naming the file (and the column) when it is empty, not UTF-8, has no rows, lacks a column, or
            holds a non-numeric, empty or out-of-range (beyond float32) value.
    """
    import pandas as pd

    frame = read_csv(path)
    if features is None:
        features = [
            name for name in frame.columns if name not in targets and pd.api.types.is_numeric_dtype(frame[name])
        ]
    missing = [name for name in [*targets, *features] if name not in frame.columns]
    if missing or not targets or not features:
        raise ValueError(f"{path}: columns {missing or 'of features'} not found; it has {list(frame.columns)}")
    columns = frame[[*features, *targets]]
    wrong = [name for name in columns if not pd.api.types.is_numeric_dtype(columns[name])]
    if wrong or columns.isna().any().any() or len(columns) < 3:
        empty = [name for name in columns if columns[name].isna().any()]
        problem = f"non-numeric columns {wrong}" if wrong else f"empty values in {empty}" if empty else "under 3 rows"
        raise ValueError(f"{path}: {problem}; every row needs a number in each of {[*features, *targets]}")
    values = torch.tensor(columns.to_numpy(dtype="float64"))
    check_float32_range(values, [*features, *targets], str(path))
    return values[:, : len(features)], values[:, len(features) :]
