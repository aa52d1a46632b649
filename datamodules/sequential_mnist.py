"""Images read as sequences: sequential MNIST (rows or pixels, optionally permuted) and the embedded 8x8 digits.

Sequential MNIST (Le et al., 2015) feeds an RNN one image row (28 steps of 28 pixels) or one pixel (784 steps of 1)
at a time; the permuted variant shuffles the time steps with one fixed permutation, which removes the locality an
RNN could exploit. The images come from the image datamodules (:class:`~datamodules.MNISTDataModule`,
:class:`~datamodules.DigitsDataModule`), so files are found, unpacked, split and named in errors exactly as there.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from datamodules.base import ImageDataModule
from datamodules.digits import DigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.sequence import SequenceDataModule
from datamodules.transforms import normalize_batch

SequenceMode = Literal["rows", "pixels"]


class _ImagesAsSequences(SequenceDataModule):
    """The images of an image datamodule as rows (``H`` steps of ``W * C``) or pixels (``H * W`` steps of ``C``)."""

    num_classes = 10

    def _read_images_from(self, images: ImageDataModule, mode: SequenceMode, permute: bool) -> None:
        if mode not in ("rows", "pixels"):
            raise ValueError(f"Unknown mode {mode!r}; choose 'rows' or 'pixels'.")
        self.images, self.mode, self.permute = images, mode, permute
        channels, (height, width) = images.in_channels, images.img_size
        self.max_length, self.in_features = (height, width * channels) if mode == "rows" else (height * width, channels)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Rows (or pixels) of [0, 1] pixel values, normalized per feature with the images' channel statistics."""
        channels = self.images.in_channels
        mean = [float(self.images.mean[f % channels]) for f in range(self.in_features)]
        std = [float(self.images.std[f % channels]) for f in range(self.in_features)]
        classes = [str(name) for name in getattr(self.images, "classes", range(self.num_classes))]
        spec = {"input": "series", "in_features": self.in_features, "max_length": self.max_length}
        return {**spec, "mean": mean, "std": std, "classes": classes, "permuted": self.permute}

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def load_sequences(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = self.images.load_arrays(train)  # uint8 (N, C, H, W)
        x = normalize_batch(images, torch.tensor(self.images.mean), torch.tensor(self.images.std))
        x = x.permute(0, 2, 3, 1).reshape(len(x), self.max_length, self.in_features)  # (N, T, F)
        if self.permute:
            order = torch.randperm(self.max_length, generator=torch.Generator().manual_seed(self.seed))
            x = x[:, order]
        return x.contiguous(), targets


class SequentialMNISTDataModule(_ImagesAsSequences):
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
        super().__init__(data_dir, batch_size, val_fraction, "random", num_workers, pin_memory, seed)
        self._read_images_from(MNISTDataModule(data_dir, download=download), mode, permute)


class DigitsSequenceDataModule(_ImagesAsSequences):
    """scikit-learn's embedded 8x8 digits as sequences (no download; for demos and fast tests).

    Args:
        data_dir: unused (the data ships with scikit-learn).
        mode: ``"rows"`` (8 steps of 8 features) or ``"pixels"`` (64 steps of 1).
        permute: shuffle the time steps with a fixed permutation drawn from ``seed``.
        batch_size: sequences per batch.
        val_fraction: fraction of the non-test images used for validation.
        test_fraction: fraction of all images held out for testing (by ``seed``, as :class:`DigitsDataModule`).
        num_workers: loader worker processes.
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
    """

    def __init__(
        self,
        data_dir: str = "data",
        mode: SequenceMode = "rows",
        permute: bool = False,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__(data_dir, batch_size, val_fraction, "random", num_workers, pin_memory, seed)
        self._read_images_from(DigitsDataModule(test_fraction=test_fraction, seed=seed), mode, permute)
