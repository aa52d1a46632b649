"""scikit-learn's bundled 8x8 handwritten digits: a real dataset that needs no download.

1,797 grey images of 8x8 pixels with 17 grey levels (0-16), 10 classes. There is no official test split, so a
fixed ``test_fraction`` is held out with ``seed`` before the train/val split.
"""

from __future__ import annotations

import torch

from datamodules.base import ImageDataModule, split_indices
from datamodules.transforms import AugmentName


class DigitsDataModule(ImageDataModule):
    """The embedded 8x8 digits (scikit-learn), the default dataset of the demo and of fast tests.

    Args:
        data_dir: unused (the data ships with scikit-learn); kept so every image datamodule takes it.
        batch_size: samples per batch.
        val_fraction: fraction of the non-test images used for validation.
        test_fraction: fraction of all images held out for testing.
        augment: training augmentation preset.
        num_workers: loader worker processes (``None``: automatic).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the test and validation splits.
        download: unused.
        num_folds: with 2 or more, fold ``fold`` of the non-test images validates (stratified) instead of the
            ``val_fraction`` split; 0: no folds.
        fold: the validation fold, in ``[0, num_folds)``.
    """

    num_classes = 10
    classes = tuple(str(digit) for digit in range(10))
    in_channels = 1
    img_size = (8, 8)
    mean = (0.3055,)
    std = (0.3760,)
    hflip = False

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        augment: AugmentName = "none",
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
        download: bool = True,
        num_folds: int = 0,
        fold: int = 0,
    ) -> None:
        super().__init__(
            data_dir, batch_size, val_fraction, augment, num_workers, pin_memory, seed, download, num_folds, fold
        )
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")

    def load_arrays(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits  # here: importing scikit-learn costs every program 0.5 s

        digits = load_digits()
        # 0..16 grey levels -> 0..255, (N, 64) -> (N, 1, 8, 8)
        images = torch.from_numpy(digits.data).mul(255 / 16).round().to(torch.uint8).view(-1, 1, 8, 8)
        targets = torch.from_numpy(digits.target)
        train_idx, test_idx = split_indices(len(images), self.hparams.test_fraction, self.hparams.seed)
        index = train_idx if train else test_idx
        return images[index], targets[index]
