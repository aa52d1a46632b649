"""CIFAR-10 in any of its common on-disk forms, decoded once into memory.

``data_dir`` may hold (checked in this order):

1. ``cifar-10-batches-py/`` — the pickled batches of the python release (read by ``torchvision.datasets.CIFAR10``);
2. ``train/<class>/*.jpg|png`` and ``test/<class>/...`` — an image-folder export;
3. ``cifar10-jpeg-train.tar.gz`` and ``cifar10-jpeg-test.tar.gz`` — tarballs of such a folder (read without unpacking).

Class indices follow the sorted class-folder names, which is CIFAR-10's own label order. The pickled batches are
Python pickles: only read copies from a source you trust.
"""

from __future__ import annotations

import os
import pickle
import tarfile
import zlib

import torch
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS

from datamodules.base import ImageDataModule, decode_image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _CIFAR10Batches(datasets.CIFAR10):
    # The md5 checks of the official files would reject re-exported batches; a corrupt file still fails to unpickle
    # and is then named by `_first_unreadable_batch`. The class names are CIFAR-10's own.
    def _check_integrity(self) -> bool:
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, name)) for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        self.classes = list(CIFAR10_CLASSES)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


def _first_unreadable_batch(folder: str) -> str:
    for name, _ in _CIFAR10Batches.train_list + _CIFAR10Batches.test_list:
        try:
            with open(os.path.join(folder, name), "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")
            entry["data"], entry.get("labels", entry.get("fine_labels"))
        except Exception:  # any failure to unpickle or index means this file is the bad one
            return os.path.join(folder, name)
    return folder


def read_image_tree(root: str, classes: tuple[str, ...]) -> list[tuple[str, bytes, int]]:
    """``(path, bytes, class index)`` of every image under ``root/<class>/``; absent classes are skipped."""
    class_to_idx = {name: index for index, name in enumerate(classes)}
    files = datasets.folder.make_dataset(root, class_to_idx, IMG_EXTENSIONS, allow_empty=True)
    items = []
    for path, index in files:
        with open(path, "rb") as handle:
            items.append((path, handle.read(), index))
    return items


def read_image_tarball(path: str, classes: tuple[str, ...]) -> list[tuple[str, bytes, int]]:
    """``(member, bytes, class index)`` of every image in a tarball laid out as ``<split>/<class>/<file>``."""
    index_of = {name: i for i, name in enumerate(classes)}
    items = []
    try:
        with tarfile.open(path) as archive:
            for member in archive:
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-1].lower().endswith(IMG_EXTENSIONS):
                    if parts[-2] not in index_of:
                        raise ValueError(f"{path}: unknown class folder {parts[-2]!r} in {member.name}")
                    items.append((f"{path}:{member.name}", archive.extractfile(member).read(), index_of[parts[-2]]))
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ValueError(
            f"{path} cannot be read ({type(error).__name__}: {error}; {len(items)} images read before): the file is "
            "truncated or not a (gzipped) tar archive. Replace it with the original file."
        ) from error
    return sorted(items, key=lambda item: item[0])


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50k train (split into train/val) + 10k test, 3x32x32, 10 classes."""

    num_classes = 10
    classes = CIFAR10_CLASSES
    in_channels = 3
    img_size = (32, 32)
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def _source(self, split: str) -> tuple[str, str] | None:
        """The first on-disk form found for ``split``: ``(kind, path)``."""
        batches = os.path.join(self.data_dir, datasets.CIFAR10.base_folder)
        if os.path.isdir(batches):
            return "batches", batches
        folder = os.path.join(self.data_dir, split)
        if os.path.isdir(folder):
            return "folder", folder
        tarball = os.path.join(self.data_dir, f"cifar10-jpeg-{split}.tar.gz")
        if os.path.isfile(tarball):
            return "tarball", tarball
        return None

    def _missing_message(self) -> str:
        root = os.path.abspath(self.data_dir)
        return (
            f"CIFAR-10 not found in {root}/. Put the python release's folder there "
            f"({root}/cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta), or image folders "
            f"{root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg, or the tarballs "
            f"{root}/cifar10-jpeg-train.tar.gz and {root}/cifar10-jpeg-test.tar.gz; "
            "or run with download=True where the network is reachable."
        )

    def prepare_data(self) -> None:
        if self._source("train") and self._source("test"):
            return
        if not self.hparams.download:
            raise FileNotFoundError(self._missing_message())
        try:
            datasets.CIFAR10(self.data_dir, train=True, download=True)
        except Exception as error:  # network errors come in many types (URLError, HTTPError, timeouts)
            raise FileNotFoundError(f"Download failed ({error}). {self._missing_message()}") from error

    def load_arrays(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        split = "train" if train else "test"
        source = self._source(split)
        if source is None:
            raise FileNotFoundError(self._missing_message())
        kind, path = source
        if kind == "batches":
            try:
                dataset = _CIFAR10Batches(self.data_dir, train=train, download=False)
            except RuntimeError as error:
                raise FileNotFoundError(self._missing_message()) from error
            except Exception as error:  # unpickling raises many types
                raise ValueError(f"Cannot read CIFAR-10 batch {_first_unreadable_batch(path)}: {error!r}") from error
            # (N, H, W, C) numpy -> (N, C, H, W) tensor
            return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(dataset.targets)
        items = (
            read_image_tree(path, CIFAR10_CLASSES) if kind == "folder" else read_image_tarball(path, CIFAR10_CLASSES)
        )
        if not items:
            raise FileNotFoundError(f"No images found in {path}. {self._missing_message()}")
        images = torch.stack([decode_image(data, name=name) for name, data, _ in items])
        return images, torch.tensor([label for _, _, label in items])
