"""MNIST and Fashion-MNIST from the standard IDX files, read by ``torchvision.datasets``.

Files are looked up in ``<data_dir>/<Name>/raw/`` (torchvision's layout). Gzipped files found there, or directly
in ``data_dir`` (e.g. a flat folder holding the four ``*-ubyte.gz`` files), are unpacked into that folder first, so
a copy of the distribution files works offline; a read-only ``data_dir`` is unpacked into ``~/.cache/lightning-zoo``.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import torch
from torchvision import datasets
from torchvision.datasets.utils import extract_archive

from datamodules.base import ImageDataModule

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits: 60k train (split into train/val) + 10k test, 1x28x28, 10 classes."""

    dataset_cls = datasets.MNIST
    num_classes = 10
    in_channels = 1
    img_size = (28, 28)
    mean = (0.1307,)
    std = (0.3081,)
    hflip = False

    @property
    def root(self) -> str:
        """torchvision's root: ``data_dir``, or a cache folder when ``data_dir`` is read-only (a shared copy)."""
        # The mode bits too: root may write anywhere, but a folder without write bits is meant to stay untouched.
        if not os.path.isdir(self.data_dir) or (
            os.access(self.data_dir, os.W_OK) and os.stat(self.data_dir).st_mode & 0o222
        ):
            return self.data_dir
        digest = hashlib.sha1(os.path.abspath(self.data_dir).encode()).hexdigest()[:12]
        cache = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
        return os.path.join(cache, "lightning-zoo", digest)

    @property
    def raw_folder(self) -> str:
        """Where torchvision reads the unpacked IDX files."""
        return os.path.join(self.root, self.dataset_cls.__name__, "raw")

    def _unpack_local_archives(self) -> None:
        for name in _MNIST_FILES:
            target = os.path.join(self.raw_folder, name)
            if os.path.exists(target):
                continue
            for source in (
                target + ".gz",
                os.path.join(self.data_dir, name + ".gz"),
                os.path.join(self.data_dir, name),
            ):
                if os.path.exists(source):
                    os.makedirs(self.raw_folder, exist_ok=True)
                    if source.endswith(".gz"):
                        extract_archive(source, self.raw_folder)
                    else:
                        shutil.copyfile(source, target)
                    break

    def _missing_message(self) -> str:
        files = ", ".join(f"{name}.gz" for name in _MNIST_FILES)
        return (
            f"{self.dataset_cls.__name__} files not found. Put {files} (gzipped or unpacked) in "
            f"{os.path.abspath(self.raw_folder)}/ (or directly in {os.path.abspath(self.data_dir)}/), "
            f"or run with download=True where the network is reachable."
        )

    def prepare_data(self) -> None:
        self._unpack_local_archives()
        if all(os.path.exists(os.path.join(self.raw_folder, name)) for name in _MNIST_FILES):
            return
        if not self.hparams.download:
            raise FileNotFoundError(self._missing_message())
        try:
            self.dataset_cls(self.root, train=True, download=True)
            self.dataset_cls(self.root, train=False, download=True)
        except Exception as error:  # network errors come in many types (URLError, HTTPError, timeouts)
            raise FileNotFoundError(f"Download failed ({error}). {self._missing_message()}") from error

    def load_arrays(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self._unpack_local_archives()
        try:
            dataset = self.dataset_cls(self.root, train=train, download=False)
        except RuntimeError as error:
            raise FileNotFoundError(self._missing_message()) from error
        return dataset.data.unsqueeze(1), dataset.targets  # (N, 28, 28) -> (N, 1, 28, 28)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST clothing images: 60k train + 10k test, 1x28x28, 10 classes, same file names as MNIST."""

    dataset_cls = datasets.FashionMNIST
    mean = (0.2860,)
    std = (0.3530,)
    hflip = True
