"""MNIST and Fashion-MNIST from the standard IDX files, read by ``torchvision.datasets``.

Files are looked up in ``<data_dir>/<Name>/raw/`` (torchvision's layout). Gzipped files found there, or directly
in ``data_dir`` (e.g. a flat folder holding the four ``*-ubyte.gz`` files), are unpacked into that folder first, so
a copy of the distribution files works offline; a read-only ``data_dir`` is unpacked into ``~/.cache/lightning-zoo``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import shutil
import struct
import zlib
from typing import Any

import numpy as np
import torch
from torchvision import datasets

from datamodules.base import ImageDataModule

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx_header(path: str, ndim: int) -> tuple[int, ...]:
    """The dimensions in the header of an unsigned-byte IDX file, checked against the file's size.

    Raises:
        ValueError: naming ``path``, when it is not an IDX file of ``ndim`` dimensions or is truncated.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        header = handle.read(4 + 4 * ndim)
    expected_magic = 0x0800 | ndim  # 0x08: unsigned bytes; low byte: number of dimensions
    magic = struct.unpack(">I", header[:4])[0] if len(header) >= 4 else None
    if magic != expected_magic or len(header) < 4 + 4 * ndim:
        found = f"magic number {magic:#06x}" if magic is not None else f"{size} bytes"
        raise ValueError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes (expected magic number {expected_magic:#06x}, "
            f"found {found}). Replace it with the original file (images have 3 dimensions, labels 1)."
        )
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected_size = 4 + 4 * ndim + math.prod(dims)
    if size != expected_size:
        raise ValueError(
            f"{path} holds {size} bytes, but its header {dims} says {expected_size}: the file is truncated or "
            "padded. Replace it with the original file."
        )
    return dims


def write_idx(path: str | os.PathLike[str], array: Any) -> None:
    """Write an array of unsigned bytes in the IDX format of the MNIST files (gzipped when ``path`` ends in ``.gz``):
    what :func:`read_idx_header` and torchvision read.

    >>> import numpy as np, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> write_idx(path, np.arange(5))
    >>> read_idx_header(path, 1)
    (5,)
    """
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim  # 0x08: unsigned bytes; low byte: number of dimensions
    payload = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as handle:
        handle.write(payload)


def _gunzip(source: str, target: str) -> None:
    """Decompress ``source`` into ``target`` through a temporary file, so a failure leaves no partial target."""
    partial = target + ".partial"
    try:
        with gzip.open(source, "rb") as packed, open(partial, "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    except (EOFError, OSError, zlib.error) as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        raise ValueError(
            f"{source} cannot be decompressed ({type(error).__name__}: {error}): the download was cut short or "
            "the file is not gzip. Replace it with the original file."
        ) from error
    os.replace(partial, target)


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits: 60k train (split into train/val) + 10k test, 1x28x28, 10 classes."""

    dataset_cls = datasets.MNIST
    num_classes = 10
    classes = tuple(str(digit) for digit in range(10))
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

    def _unpack_local_archives(self) -> bool:
        """Unpack (or copy) the distribution files into ``raw_folder`` and check them; ``False`` when some are missing.

        An unpacked file that fails its header check (an earlier extraction cut short) is replaced from its archive
        when there is one.
        """
        for name in _MNIST_FILES:
            target = os.path.join(self.raw_folder, name)
            if os.path.exists(target):
                try:
                    read_idx_header(target, 1 if "labels" in name else 3)
                    continue
                except ValueError:
                    pass  # re-extracted below, or reported by _check_files when no source exists
            for source in (
                target + ".gz",
                os.path.join(self.data_dir, name + ".gz"),
                os.path.join(self.data_dir, name),
            ):
                if os.path.exists(source) and os.path.abspath(source) != os.path.abspath(target):
                    os.makedirs(self.raw_folder, exist_ok=True)
                    if source.endswith(".gz"):
                        _gunzip(source, target)
                    else:
                        shutil.copyfile(source, target)
                    break
        if not all(os.path.exists(os.path.join(self.raw_folder, name)) for name in _MNIST_FILES):
            return False
        self._check_files()
        return True

    def _check_files(self) -> None:
        """Check the four files' headers and sizes, and that each image file has as many labels as images.

        Runs before training, so a wrong or swapped test file is found at setup, not after the last epoch.
        """
        for split in ("train", "t10k"):
            images = os.path.join(self.raw_folder, f"{split}-images-idx3-ubyte")
            labels = os.path.join(self.raw_folder, f"{split}-labels-idx1-ubyte")
            count, *size = read_idx_header(images, 3)
            if tuple(size) != self.img_size:
                raise ValueError(
                    f"{images} holds {tuple(size)} images; {self.dataset_cls.__name__} has {self.img_size}"
                )
            (label_count,) = read_idx_header(labels, 1)
            if label_count != count:
                raise ValueError(f"{images} holds {count} images but {labels} holds {label_count} labels")

    def _missing_message(self) -> str:
        files = ", ".join(f"{name}.gz" for name in _MNIST_FILES)
        return (
            f"{self.dataset_cls.__name__} files not found. Put {files} (gzipped or unpacked) in "
            f"{os.path.abspath(self.raw_folder)}/ (or directly in {os.path.abspath(self.data_dir)}/), "
            f"or run with download=True where the network is reachable."
        )

    def prepare_data(self) -> None:
        if self._unpack_local_archives():
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
    classes = tuple(datasets.FashionMNIST.classes)
    mean = (0.2860,)
    std = (0.3530,)
    hflip = True
