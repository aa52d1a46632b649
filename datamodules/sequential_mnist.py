"""Images read as sequences: sequential MNIST (rows or pixels, optionally permuted) and the embedded 8x8 digits.

Sequential MNIST (Le et al., 2015) feeds an RNN one image row (28 steps of 28 pixels) or one pixel (784 steps of 1)
at a time; the permuted variant shuffles the time steps with one fixed permutation, which removes the locality an
RNN could exploit. The MNIST files are found, unpacked and named in errors exactly as by
:class:`~datamodules.MNISTDataModule`.
"""

from __future__ import annotations

from typing import Literal

import torch
from sklearn.datasets import load_digits

from datamodules.base import split_indices
from datamodules.mnist import MNISTDataModule
from datamodules.sequence import SequenceDataModule

SequenceMode = Literal["rows", "pixels"]


def _as_sequences(images: torch.Tensor, mean: float, std: float, mode: SequenceMode) -> torch.Tensor:
    """uint8 ``(N, 1, H, W)`` -> normalized float ``(N, H, W)`` (rows) or ``(N, H * W, 1)`` (pixels)."""
    x = (images.squeeze(1).float() / 255 - mean) / std
    return x if mode == "rows" else x.flatten(1).unsqueeze(-1)


class SequentialMNISTDataModule(SequenceDataModule):
    """MNIST as sequences: 60k train (split into train/val) + 10k test, 10 classes.

    Args:
        data_dir: where the MNIST IDX files are (see :class:`~datamodules.MNISTDataModule`).
        mode: ``"rows"`` (28 steps of 28 features) or ``"pixels"`` (784 steps of 1).
        permute: shuffle the time steps with a fixed permutation drawn from ``seed`` (permuted MNIST).
        batch_size: sequences per batch.
        val_fraction: fraction of the training images held out for validation.
        num_workers: loader worker processes (in-memory slicing needs none).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the split and of the permutation.
        download: download the files when they are missing and the network allows.
    """

    num_classes = 10

    def __init__(
        self,
        data_dir: str = "data",
        mode: SequenceMode = "rows",
        permute: bool = False,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
        download: bool = True,
    ) -> None:
        if mode not in ("rows", "pixels"):
            raise ValueError(f"Unknown mode {mode!r}; choose 'rows' or 'pixels'.")
        super().__init__(data_dir, batch_size, val_fraction, "random", num_workers, pin_memory, seed)
        self.mode, self.permute = mode, permute
        self.in_features, self.max_length = (28, 28) if mode == "rows" else (1, 784)
        self.mnist = MNISTDataModule(data_dir, download=download)

    def prepare_data(self) -> None:
        self.mnist.prepare_data()

    def load_sequences(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.mnist.load_arrays(train)
        x = _as_sequences(images, self.mnist.mean[0], self.mnist.std[0], self.mode)
        if self.permute:
            order = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(self.seed))
            x = x[:, order]
        return x.contiguous(), targets


class DigitsSequenceDataModule(SequenceDataModule):
    """scikit-learn's embedded 8x8 digits as 8 steps of 8 pixels (no download; for demos and fast tests).

    Args:
        data_dir: unused (the data ships with scikit-learn).
        batch_size: sequences per batch.
        val_fraction: fraction of the non-test images used for validation.
        test_fraction: fraction of all images held out for testing (by ``seed``).
        num_workers: loader worker processes.
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
    """

    num_classes = 10
    in_features = 8
    max_length = 8
    mean, std = 0.3055, 0.3760  # of the pixels scaled to [0, 1], as DigitsDataModule

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        super().__init__(data_dir, batch_size, val_fraction, "random", num_workers, pin_memory, seed)
        self.test_fraction = test_fraction

    def load_sequences(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        digits = load_digits()
        x = (torch.from_numpy(digits.data).float().view(-1, 8, 8) / 16 - self.mean) / self.std  # (N, 8 rows, 8)
        train_idx, test_idx = split_indices(len(x), self.test_fraction, self.seed)
        index = train_idx if train else test_idx
        return x[index], torch.from_numpy(digits.target)[index]
