"""Shared machinery of the datamodules: in-memory datasets, deterministic splits, loaders, image decoding, and the
preprocessing every datamodule saves into checkpoints for the tools.

:class:`SavesPreprocessing`: a datamodule states what inference needs to read inputs as training did (its
``preprocessing``: primitives), and Lightning writes it into every checkpoint (``checkpoint[<class name>]``), where
``zoo.checkpoint.data_preprocessing`` finds it without building the datamodule. The keys:

- ``input``: ``"image"``, ``"series"``, ``"tokens"``, ``"text"`` or ``"features"``;
- ``in_channels``, ``img_size``: image channels and ``[height, width]``;
- ``mean``, ``std``: the normalization of float inputs (per channel of images in [0, 1] units, per feature of
  series), applied by the tools before the model;
- ``classes``: class names by index; ``vocab``: the characters of a text vocabulary in id order;
- anything else that helps a reader (column names, lengths).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision.io import decode_jpeg
from torchvision.transforms.v2.functional import pil_to_tensor

from datamodules.resumable import ResumableLoader
from datamodules.transforms import AugmentName, BatchFlip, BatchFlipTranslate, build_augmentation, normalize_batch

Batch = tuple[torch.Tensor, torch.Tensor]
#: File endings of images collected from folders (a file named on its own is read whatever its ending).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")
#: PIL modes read as images of 8-bit channels; others (16-bit, float, CMYK, ...) have no single right conversion.
IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX")


class ImageDecodeError(ValueError):
    """A file or upload that cannot be read as an 8-bit image; the message names it."""


class ImageTooLargeError(ValueError):
    """An image of more pixels than the reader decodes; the message names it and the limit."""


class SavesPreprocessing:
    """Mixin of a LightningDataModule whose :attr:`preprocessing` goes into every checkpoint (its ``state_dict``)."""

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What inference needs to read inputs as this data's evaluation did (primitives; keys in the module doc)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "preprocessing": self.preprocessing}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({key: value for key, value in state_dict.items() if key != "preprocessing"})


class InMemoryImageDataset(Dataset):
    """Images held as one uint8 tensor ``(N, C, H, W)``; batches are sliced and normalized in one go.

    The DataLoader calls ``__getitems__`` with a whole batch of indices, so without augmentation a batch costs one
    indexing and one normalization instead of ``batch_size`` Python calls and a collate. With augmentation each
    image goes through the (random, per-sample) transform first; a ``batch_transform`` (``(images, indices) ->
    images``, e.g. :class:`~datamodules.transforms.BatchFlipTranslate`) then takes the whole uint8 batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Any = None,
        batch_transform: Any = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images, self.targets = images, targets.long()
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self.transform, self.batch_transform = transform, batch_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        images, targets = self.__getitems__([index])
        return images[0], targets[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices)
        images = self.images[index]  # (B, C, H, W) uint8
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        if self.batch_transform is not None:
            images = self.batch_transform(images, index)
        return normalize_batch(images, self.mean, self.std), self.targets[index]


def decode_image(
    source: str | os.PathLike[str] | bytes, channels: int = 3, name: str | None = None, max_pixels: int | None = None
) -> torch.Tensor:
    """uint8 ``(C, H, W)`` (1 channel: grayscale, else RGB) from an image file or its encoded bytes.

    Raises:
        ImageTooLargeError: naming the image when it has more than ``max_pixels`` pixels (checked before decoding:
            a small file may hold a huge image).
        ImageDecodeError: naming the image when it cannot be decoded, or its mode has no single conversion to 8-bit
            channels (16-bit, float, CMYK, ...).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "the upload")
    if isinstance(source, bytes) and channels == 3 and max_pixels is None and source[:2] == b"\xff\xd8":
        fast = _decode_rgb_jpeg(source)
        if fast is not None:
            return fast
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{label}: {width}x{height} pixels is more than the {max_pixels} this reader decodes; "
                    "downscale it first"
                )
            image.load()
            if image.mode not in IMAGE_MODES:
                raise ImageDecodeError(
                    f"{label}: image mode {image.mode!r} is not read; give 8-bit grayscale or RGB images (modes "
                    f"{', '.join(IMAGE_MODES)}): convert it first"
                )
            return pil_to_tensor(image.convert("RGB" if channels == 3 else "L"))
    except (ImageDecodeError, ImageTooLargeError):
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{label}: {error}") from error
    except (OSError, ValueError, SyntaxError) as error:  # PIL: UnidentifiedImageError, truncated files
        raise ImageDecodeError(f"Cannot decode image {label}: {error}") from error


def _decode_rgb_jpeg(data: bytes) -> torch.Tensor | None:
    """A colour JPEG decoded by torchvision (libjpeg-turbo, about 5x faster than PIL on CIFAR-size images, the same
    pixels); ``None`` for a grey or CMYK one or one it cannot read, which PIL then converts or names."""
    try:
        image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except RuntimeError:
        return None
    return image if image.shape[0] == 3 else None


def collate_batched(batch: Batch) -> Batch:
    """Collate for datasets whose ``__getitems__`` already returns a stacked batch."""
    return batch


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, val) index split of ``range(n)``: the same ``seed`` gives the same split everywhere."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_fraction)
    return permutation[n_val:].sort().values, permutation[:n_val].sort().values


def check_folds(num_folds: int, fold: int) -> None:
    """Raise at construction for fold options no split can follow: ``num_folds`` 0 (no folds) or at least 2, and
    ``fold`` in ``[0, num_folds)`` (0 without folds)."""
    for name, value in (("num_folds", num_folds), ("fold", fold)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if num_folds == 1 or num_folds < 0:
        raise ValueError(f"num_folds must be 0 (no folds) or at least 2, got {num_folds}")
    if num_folds == 0 and fold != 0:
        raise ValueError(f"fold={fold} needs num_folds >= 2 (num_folds is 0: no folds)")
    if num_folds and not 0 <= fold < num_folds:
        raise ValueError(f"fold must be in [0, {num_folds}) for num_folds={num_folds}, got {fold}")


def fold_indices(
    num_samples: int, num_folds: int, fold: int, seed: int, targets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, val) index split of ``range(num_samples)``: fold ``fold`` of ``num_folds`` validates and
    the other folds train. Stratified by class (scikit-learn's ``StratifiedKFold``) when ``targets`` are integer class
    indices ``(num_samples,)``, so each fold holds each class within one sample of the others; ``KFold`` otherwise.
    Both shuffle with ``seed``: the same seed gives the same folds everywhere, and the folds cover the samples once.

    >>> train, val = fold_indices(10, 5, 0, seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    from sklearn.model_selection import KFold, StratifiedKFold  # here: importing scikit-learn costs 0.5 s

    check_folds(num_folds, fold)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2 to draw folds, got {num_folds}")
    placeholder = np.zeros(num_samples)  # the splitters only read len(X)
    classes = targets is not None and targets.ndim == 1 and not targets.is_floating_point()
    if classes:
        if len(targets) != num_samples:
            raise ValueError(f"{num_samples} samples but {len(targets)} targets")
        splits = StratifiedKFold(num_folds, shuffle=True, random_state=seed).split(placeholder, targets.numpy())
    else:
        splits = KFold(num_folds, shuffle=True, random_state=seed).split(placeholder)
    train, val = next(itertools.islice(splits, fold, None))
    return torch.from_numpy(train).long(), torch.from_numpy(val).long()


def read_csv(path: str | os.PathLike[str]) -> Any:
    """A CSV file with a header row and at least one data row, as a pandas DataFrame.

    Raises:
        FileNotFoundError: naming the file when it is missing.
        ValueError: naming the file when it is empty, not UTF-8 text, malformed, or holds a header and no rows.
    """
    import pandas as pd

    where = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No CSV file at {where}; put a CSV file with a header row there")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{where} is empty; a CSV file needs a header row, then one row of values per line") from error
    except UnicodeDecodeError as error:
        with open(path, "rb") as file:  # pandas gives offsets within its chunk; decode the whole file for the line
            data = file.read()
        try:
            data.decode("utf-8")
            start = error.start
        except UnicodeDecodeError as whole:
            start = whole.start
        line = data.count(b"\n", 0, start) + 1
        raise ValueError(
            f"{where} is not UTF-8 text (byte {data[start]:#04x} on line {line}); save it as UTF-8 CSV"
        ) from error
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"{where} is not a readable CSV file ({type(error).__name__}: {error})") from error
    if frame.empty:
        raise ValueError(f"{where} has a header ({', '.join(map(str, frame.columns))}) but no rows of values")
    return frame


def check_float32_range(values: Any, columns: Sequence[str], source: str) -> None:
    """Raise naming the column and row of the first value (NaN aside) that float32, in which models compute and
    scalers are saved, cannot hold: an infinity, or a magnitude beyond 3.4e38 (whose standard deviation would overflow
    to inf and scale every value to 0 or NaN).

    Args:
        values: ``(N, len(columns))`` numbers (a NumPy array or tensor, float64).
        columns: the column names.
        source: the file or series named in the error.
    """
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    beyond = np.abs(np.nan_to_num(values, nan=0.0)) > np.finfo(np.float32).max
    if beyond.any():
        row, column = (int(i) for i in np.argwhere(beyond)[0])
        raise ValueError(
            f"column {columns[column]!r} of {source} holds {values[row, column]:g} (data row {row + 1}), beyond the "
            f"float32 range (+-{np.finfo(np.float32).max:.3g}) models compute in; rescale the column (e.g. other units)"
        )


def check_batch_and_split(batch_size: int, val_fraction: float, test_fraction: float = 0.0) -> None:
    """Raise at construction for a batch size or split fractions no loader can use (each fraction in [0, 1), and
    together less than 1: something must be left to train on)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 <= test_fraction < 1 or not val_fraction + test_fraction < 1:
        raise ValueError(
            f"need test_fraction in [0, 1) and val_fraction + test_fraction < 1, got {val_fraction} and {test_fraction}"
        )


class EvalDistributedSampler(DistributedSampler):
    """Every sample exactly once over all ranks (rank ``r`` reads ``r, r + W, r + 2W, ...``), in order.

    Lightning's default ``DistributedSampler`` pads the evaluation set with repeated samples so that each rank gets
    the same count, and the metrics then count those twice. Ranks may then get one batch fewer, which is safe as long
    as evaluation runs no per-step collective: losses and metrics are torchmetrics objects, synced at epoch end
    (``self.log(..., sync_dist=True)`` in an evaluation step would hang). The one collective of DDP's first
    evaluation forward, a buffer broadcast, runs on every rank, since each gets at least one batch.
    """

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False)
        if len(dataset) < self.num_replicas:
            raise ValueError(
                f"An evaluation set of {len(dataset)} samples cannot be split over {self.num_replicas} ranks"
            )
        self.indices = range(self.rank, len(dataset), self.num_replicas)
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool | None,
    collate_fn: Any = None,
) -> DataLoader:
    """A DataLoader with the collection's defaults: host memory pinned when CUDA is there (``pin_memory=None``),
    workers kept between epochs, a training loader that resumes mid-epoch where it stopped (:class:`ResumableLoader`)
    and under DDP an evaluation loader that reads each sample once (:class:`EvalDistributedSampler`; Lightning
    shards the training loader itself)."""
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    sampler = EvalDistributedSampler(dataset) if distributed and not shuffle else None
    loader_class = ResumableLoader if shuffle and not distributed else DataLoader
    return loader_class(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
    )


class SplitLoaders:
    """The four dataloader hooks of a datamodule over ``_loader(split, shuffle)``; predict reads the test split."""

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")


class TensorSplitsDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of datamodules whose train, val and test splits are tensors in memory, batched by slicing.

    A subclass sets ``classes``, and implements :meth:`load_splits` (the tensors) and :meth:`make_datasets` (the
    datasets over them, whose ``__getitems__`` returns whole batches: ``collate_batched``).

    Args:
        batch_size: samples per batch.
        seed: seed of the data and the splits.
        num_workers: loader worker processes (in-memory tensors need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        num_folds: with 2 or more, ``train`` and ``val`` are pooled and fold ``fold`` of them validates
            (:func:`fold_indices`, by ``seed``); 0 keeps the splits of :meth:`load_splits`. ``test`` is untouched.
        fold: the validation fold, in ``[0, num_folds)``.
    """

    classes: list[str]

    def __init__(
        self,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        num_folds: int = 0,
        fold: int = 0,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, 0.0)
        check_folds(num_folds, fold)
        self.batch_size, self.seed, self.num_workers, self.pin_memory = batch_size, seed, num_workers, pin_memory
        self.num_folds, self.fold = num_folds, fold
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Inputs and class indices of ``train``, ``val`` and ``test``."""
        raise NotImplementedError

    def make_datasets(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Dataset]:
        """The dataset of each split."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            splits = self.load_splits()
            if self.num_folds:
                splits = self._fold_splits(splits)
            self.datasets = self.make_datasets(splits)

    def _fold_splits(
        self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``splits`` with ``train`` and ``val`` replaced by fold ``fold`` of their pool."""
        inputs = torch.cat([splits["train"][0], splits["val"][0]])
        targets = torch.cat([splits["train"][1], splits["val"][1]])
        train, val = fold_indices(len(inputs), self.num_folds, self.fold, self.seed, targets)
        return {**splits, "train": (inputs[train], targets[train]), "val": (inputs[val], targets[val])}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__} has no {split!r} split (setup() was not called; the Trainer calls it)"
            )
        return make_loader(
            self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory, collate_batched
        )


class ImageDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of the image-classification datamodules.

    Subclasses set ``num_classes``, ``in_channels``, ``img_size``, ``mean``, ``std`` and implement
    :meth:`load_arrays` (uint8 images and targets of one split). Exposing the sizes as attributes lets
    LightningCLI link them into the model (``data.num_classes -> model.init_args.num_classes``).

    Args:
        data_dir: folder the dataset is read from (and downloaded to).
        batch_size: samples per batch for every split.
        val_fraction: fraction of the training set held out for validation (split by ``seed``).
        augment: training augmentation preset, see :func:`datamodules.transforms.build_augmentation`.
        num_workers: loader worker processes; ``None`` picks 0 without augmentation (in-memory slicing is faster
            than inter-process transfer) and up to 4 with it.
        pin_memory: pin host memory for faster GPU transfer; ``None`` pins when CUDA is available.
        seed: seed of the train/val split.
        download: download the data in ``prepare_data`` when it is missing.
        num_folds: with 2 or more, fold ``fold`` of the training set validates and the rest trains (stratified by
            class, :func:`fold_indices`, by ``seed``) instead of the ``val_fraction`` split; 0: no folds. The test
            split is untouched.
        fold: the validation fold, in ``[0, num_folds)``.
        batch_flip: horizontal flips of whole training batches, ``"none"``, ``"random"`` or ``"alternating"``
            (:class:`~datamodules.transforms.BatchFlipTranslate`; exact with ``num_workers=0``), after ``augment``.
        batch_translate: random shifts of whole training batches by up to this many pixels (reflected borders).
    """

    num_classes: int
    in_channels: int
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: Whether a horizontal flip keeps the label meaningful (not for digits or letters).
    hflip: bool = True

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        val_fraction: float = 0.1,
        augment: AugmentName = "none",
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
        download: bool = True,
        num_folds: int = 0,
        fold: int = 0,
        batch_flip: BatchFlip = "none",
        batch_translate: int = 0,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, val_fraction)
        check_folds(num_folds, fold)
        if batch_flip != "none" and not self.hflip:
            raise ValueError(f"{type(self).__name__}: a mirrored image is not its class here; use batch_flip='none'")
        BatchFlipTranslate(0, batch_flip, batch_translate)  # raises for bad values now, not at setup
        # Kept for checkpoints and `self.hparams`, not merged into the logged hparams: Lightning refuses a key that
        # model and data both have with values of different types (an int img_size here, the linked tuple there).
        # The CLI saves the whole config beside the logs.
        self.save_hyperparameters(logger=False)
        self.data_dir = os.path.expanduser(data_dir)
        self.batch_size = batch_size
        self.augmentation = build_augmentation(augment, self.img_size, self.hflip, mean=self.mean)
        self.datasets: dict[str, Dataset] = {}

    def load_arrays(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images ``(N, C, H, W)`` and integer targets ``(N,)`` of the train or test split."""
        raise NotImplementedError

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Images of ``in_channels`` at ``img_size``, normalized with ``mean`` and ``std``; the class names."""
        classes = getattr(self, "classes", None)
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "mean": [float(value) for value in self.mean],
            "std": [float(value) for value in self.std],
            "classes": [str(name) for name in classes] if classes is not None else None,
        }

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and "train" not in self.datasets:
            images, targets = self.load_arrays(train=True)
            train_idx, val_idx = self.split_train_val(targets)
            self.datasets["train"] = self._dataset(images[train_idx], targets[train_idx], self.augmentation)
            # (a subclass whose __init__ does not take them records no such hyperparameters)
            flip, translate = self.hparams.get("batch_flip", "none"), self.hparams.get("batch_translate", 0)
            if flip != "none" or translate:
                self.datasets["train"].batch_transform = BatchFlipTranslate(
                    len(train_idx), flip, translate, self.hparams.seed
                )
            self.datasets["val"] = self._dataset(images[val_idx], targets[val_idx])
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = self._dataset(*self.load_arrays(train=False))

    def split_train_val(self, targets: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(train, val) indices of a training pool of class ``targets`` ``(N,)``: fold ``fold`` of ``num_folds``
        validates when folds are on, else a random ``val_fraction``; both drawn with ``seed`` (the datamodule's by
        default)."""
        hp = self.hparams
        seed = hp.seed if seed is None else seed
        if hp.num_folds:
            return fold_indices(len(targets), hp.num_folds, hp.fold, seed, targets)
        return split_indices(len(targets), hp.val_fraction, seed)

    def default_num_workers(self) -> int:
        """0 for plain in-memory slicing (faster than inter-process transfer); up to 4 when images are transformed."""
        return 0 if self.augmentation is None else min(4, max(1, (os.cpu_count() or 2) - 1))

    def _dataset(self, images: torch.Tensor, targets: torch.Tensor, transform: Any = None) -> InMemoryImageDataset:
        return InMemoryImageDataset(images, targets, self.mean, self.std, transform)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__} has no {split!r} split in {os.path.abspath(self.data_dir)} "
                f"(or setup() was not called; the Trainer calls it)."
            )
        workers = self.hparams.num_workers
        if workers is None:
            workers = self.default_num_workers()
        dataset = self.datasets[split]
        collate = collate_batched if isinstance(dataset, InMemoryImageDataset) else None
        return make_loader(dataset, self.batch_size, shuffle, workers, self.hparams.pin_memory, collate)
