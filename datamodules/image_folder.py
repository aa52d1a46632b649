"""Any folder tree of images, one sub-folder per class, streamed from disk.

Layouts:

- ``data_dir/train/<class>/*`` with optional ``data_dir/val/<class>/*`` and ``data_dir/test/<class>/*``: the
  folders are the splits; a missing ``val`` is split off ``train`` by ``val_fraction``, a missing ``test`` leaves
  ``trainer.test`` without data.
- ``data_dir/<class>/*``: one pool split into train/val/test by ``val_fraction`` and ``test_fraction``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets
from torchvision.transforms import v2

from datamodules.base import ImageDataModule, decode_image, split_indices
from datamodules.transforms import AugmentName, build_augmentation

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Transformed(Dataset):
    """A view of a dataset with its own transform (train and val share the files, not the augmentation)."""

    def __init__(self, dataset: Dataset, transform: Any) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.dataset[index]
        return self.transform(image), target


class ImageFolderDataModule(ImageDataModule):
    """Image classification from a folder tree (any image size, resized to ``img_size``).

    Args:
        data_dir: root of the tree (see the module docstring for layouts).
        img_size: size images are resized to (an int for square).
        in_channels: 3 (RGB) or 1 (grey); images are converted on load.
        mean: per-channel normalization mean (ImageNet's by default, right for pretrained backbones).
        std: per-channel normalization std.
        batch_size: samples per batch.
        val_fraction: fraction split off for validation when there is no ``val`` folder.
        test_fraction: fraction split off for testing when the tree has no split folders.
        augment: training augmentation preset.
        num_workers: loader worker processes (``None``: up to 4).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
        download: unused; a folder tree is never downloaded.
        num_folds: with 2 or more, fold ``fold`` of the training images (``train/``, or the pool left after the test
            split) validates, stratified by class, instead of the ``val_fraction`` split; 0: no folds. A tree with a
            ``val/`` folder has fixed validation images and takes no folds.
        fold: the validation fold, in ``[0, num_folds)``.
    """

    def __init__(
        self,
        data_dir: str = "data",
        img_size: int | tuple[int, int] = 224,
        in_channels: int = 3,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        augment: AugmentName = "standard",
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
        download: bool = False,
        num_folds: int = 0,
        fold: int = 0,
    ) -> None:
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean and std need {in_channels} values, got {mean} and {std}")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_channels, self.mean, self.std = in_channels, tuple(mean), tuple(std)
        super().__init__(
            data_dir, batch_size, val_fraction, augment, num_workers, pin_memory, seed, download, num_folds, fold
        )
        self._classes: list[str] | None = None

    def default_num_workers(self) -> int:
        """Images are decoded from disk per sample, so always use workers."""
        return min(4, max(1, (os.cpu_count() or 2) - 1))

    def _split_root(self, split: str) -> str | None:
        path = os.path.join(self.data_dir, split)
        return path if os.path.isdir(path) else None

    @property
    def has_split_folders(self) -> bool:
        """Whether the tree is laid out as ``train/``, ``val/``, ``test/``."""
        return self._split_root("train") is not None

    @property
    def classes(self) -> list[str]:
        """Sorted class-folder names (class index = position)."""
        if self._classes is None:
            self.prepare_data()
            root = self._split_root("train") or self.data_dir
            classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            if len(classes) < 2:  # one class would train to a "perfect" accuracy that means nothing
                raise ValueError(
                    f"Image folder {os.path.abspath(root)}/ holds {len(classes)} class folder(s) {classes}; a "
                    "classifier needs at least two. Put one sub-folder of images per class there (<class>/*.jpg)."
                )
            self._classes = classes
        return self._classes

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        return len(self.classes)

    def prepare_data(self) -> None:
        if not os.path.isdir(self.data_dir):
            raise FileNotFoundError(
                f"Image folder {os.path.abspath(self.data_dir)}/ not found. Put one sub-folder per class there "
                f"(<class>/*.jpg), or train/<class>/*, val/<class>/* and test/<class>/* for fixed splits."
            )

    def _transform(self, train: bool) -> v2.Compose:
        ops: list[Any] = [v2.Resize(self.img_size, antialias=True)]
        augmentation = (
            build_augmentation(self.hparams.augment, self.img_size, self.hflip, mean=self.mean) if train else None
        )
        if augmentation is not None:
            ops.append(augmentation)
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(ops)

    def _folder(self, root: str) -> datasets.ImageFolder:
        # Files are read as uint8 tensors (C, H, W); a file that cannot be decoded is named in the error.
        classes = self.classes  # checked first: at least two class folders
        folder = datasets.ImageFolder(root, loader=partial(decode_image, channels=self.in_channels), allow_empty=True)
        if folder.classes != classes:
            raise ValueError(f"Class folders of {root} {folder.classes} differ from the training classes {classes}")
        empty = sorted(set(folder.classes) - {folder.classes[target] for target in folder.targets})
        if empty:
            extensions = ", ".join(datasets.folder.IMG_EXTENSIONS)
            raise ValueError(
                f"Image folder {os.path.abspath(root)}/ has class folders without images: {empty}. Put images "
                f"({extensions}) in each, or remove the empty ones."
            )
        return folder

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        train_tf, eval_tf = self._transform(train=True), self._transform(train=False)
        if self.has_split_folders:
            train_pool = self._folder(self._split_root("train"))
            val_root, test_root = self._split_root("val"), self._split_root("test")
            if val_root and hp.num_folds:
                raise ValueError(
                    f"num_folds={hp.num_folds} draws the validation fold from the training images, but "
                    f"{os.path.abspath(val_root)}/ holds fixed validation images: move them into train/ or give "
                    "num_folds=0"
                )
            if val_root:
                train_set, val_set = train_pool, self._folder(val_root)
            else:
                train_idx, val_idx = self.split_train_val(torch.as_tensor(train_pool.targets))
                train_set, val_set = Subset(train_pool, train_idx.tolist()), Subset(train_pool, val_idx.tolist())
            test_set = self._folder(test_root) if test_root else None
        else:
            pool = self._folder(self.data_dir)
            rest_idx, test_idx = split_indices(len(pool), hp.test_fraction, hp.seed)
            train_pos, val_pos = self.split_train_val(torch.as_tensor(pool.targets)[rest_idx], hp.seed + 1)
            train_set, val_set = Subset(pool, rest_idx[train_pos].tolist()), Subset(pool, rest_idx[val_pos].tolist())
            test_set = Subset(pool, test_idx.tolist())
        self.datasets = {"train": _Transformed(train_set, train_tf), "val": _Transformed(val_set, eval_tf)}
        if test_set is not None:
            self.datasets["test"] = _Transformed(test_set, eval_tf)
