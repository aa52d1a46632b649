"""Image classification from a CSV file of image paths and labels, the images streamed from disk.

The CSV has a header row, a column of image paths and a column of labels (strings or integers)::

    path,label,split
    images/cat_001.jpg,cat,train
    /data/dogs/17.png,dog,val

Relative paths are resolved against the CSV's folder (or ``data_dir``). With a ``split`` column (``train``, ``val``
or ``test`` on each row) the rows are the splits, and missing ``val`` rows are split off ``train`` by ``val_fraction``;
without one the rows are split into train/val/test by ``val_fraction`` and ``test_fraction``. Every path is checked
when the CSV is read (when ``num_classes`` is first asked for, or at ``setup``), before any training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from datamodules.base import check_batch_and_split, decode_image, read_csv
from datamodules.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataModule, _Transformed
from datamodules.resumable import ResumableLoader, ResumableRandomSampler
from datamodules.transforms import AugmentName

SPLITS = ("train", "val", "test")
#: How many missing files an error lists by path.
_LISTED = 5


class BalancedSampler(ResumableRandomSampler):
    """``len(weights)`` indices per epoch drawn with replacement in proportion to ``weights``.

    The draws come from the seed :class:`~datamodules.resumable.ResumableLoader` gives each epoch (and the ``skip``
    when it resumes), exactly as for its shuffling sampler: a resumed epoch replays
    the same draws from the first sample not yet trained on. Used alone, each iteration draws a seed from torch's
    global generator.

    Example:
        >>> sampler = BalancedSampler([0.0, 1.0, 0.0])
        >>> list(sampler)
        [1, 1, 1]
    """

    def __init__(self, weights: Sequence[float] | torch.Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        super().__init__(range(len(self.weights)))

    def __iter__(self) -> Iterator[int]:
        seed, skip = self.next_epoch()
        generator = torch.Generator().manual_seed(seed)
        draws = torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator)
        yield from draws[skip:].tolist()


class _CSVImages(Dataset):
    """uint8 images ``(C, H, W)`` decoded from ``paths`` (errors name the file), with integer ``targets``."""

    def __init__(self, paths: Sequence[str], targets: torch.Tensor, channels: int) -> None:
        self.paths, self.targets, self.channels = paths, targets, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode_image(self.paths[index], channels=self.channels), int(self.targets[index])


def _rows(positions: Sequence[int]) -> str:
    """Data rows (counted from 1 after the header) for a message: the first few, then how many more."""
    shown = ", ".join(str(position + 1) for position in positions[:_LISTED])
    return shown + (f" and {len(positions) - _LISTED} more" if len(positions) > _LISTED else "")


class ImageCSVDataModule(ImageFolderDataModule):
    """Image classification from a CSV file of image paths and labels (any image size, resized to ``img_size``).

    Class names are the distinct labels sorted (integers in numeric order, so labels ``0..K-1`` keep their values);
    a class's index is its position in :attr:`classes`. Images are decoded, resized, augmented and normalized as
    in :class:`~datamodules.ImageFolderDataModule`.

    ``balanced_sampler`` draws each training epoch with replacement (as many samples as the training split holds),
    each sample with a probability inverse to its class's count, so classes come about equally often. The draws are
    seeded from the epoch seed that :class:`~datamodules.ResumableLoader` records in checkpoints, so a run resumed
    with :class:`~callbacks.ExactResume`, even mid-epoch, trains on the same samples as an uninterrupted one (the
    augmentations too when ``num_workers=0``; workers' generators are not saved). Under DDP the sampler is torch's
    ``WeightedRandomSampler`` seeded with ``seed``, which Lightning shards over the ranks; its draws are not restored
    on resume (under DDP no training loader here is a ``ResumableLoader``).

    Args:
        csv_path: the CSV file (a header row, then one row per image).
        data_dir: folder that relative paths are resolved against (``None``: the CSV's folder).
        image_column: the column of image paths.
        label_column: the column of labels.
        split_column: the column of per-row splits (``train``, ``val``, ``test``), used when the CSV has it.
        img_size: size images are resized to (an int for square).
        in_channels: 3 (RGB) or 1 (grey); images are converted on load.
        mean: per-channel normalization mean (ImageNet's by default, right for pretrained backbones).
        std: per-channel normalization std.
        batch_size: samples per batch.
        val_fraction: fraction of all rows for validation (of the ``train`` rows with a split column and no ``val``).
        test_fraction: fraction of all rows for testing, without a split column.
        stratified: split each class by the fractions, so every split keeps the classes' proportions.
        balanced_sampler: draw training samples with class-inverse-frequency weights (see above).
        augment: training augmentation preset (:func:`~datamodules.build_augmentation`).
        num_workers: loader worker processes (``None``: up to 4).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
    """

    def __init__(
        self,
        csv_path: str,
        data_dir: str | None = None,
        image_column: str = "path",
        label_column: str = "label",
        split_column: str = "split",
        img_size: int | tuple[int, int] = 224,
        in_channels: int = 3,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        stratified: bool = False,
        balanced_sampler: bool = False,
        augment: AugmentName = "standard",
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        check_batch_and_split(batch_size, val_fraction, test_fraction)
        self.csv_path = os.path.expanduser(csv_path)
        root = data_dir if data_dir is not None else os.path.dirname(os.path.abspath(self.csv_path))
        super().__init__(
            root,
            img_size,
            in_channels,
            mean,
            std,
            batch_size,
            val_fraction,
            test_fraction,
            augment,
            num_workers,
            pin_memory,
            seed,
        )
        self._paths: list[str] = []
        self._targets = torch.empty(0, dtype=torch.long)
        self._splits: list[str] | None = None
        self._train_targets = torch.empty(0, dtype=torch.long)

    @property
    def classes(self) -> list[str]:
        """Sorted label names (class index = position)."""
        if self._classes is None:
            self._read()
        return self._classes

    def prepare_data(self) -> None:
        self._read()

    def _read(self) -> None:
        """Read the CSV once: check its columns, labels, splits and that every image file is there."""
        if self._classes is not None:
            return
        hp, where = self.hparams, os.path.abspath(self.csv_path)
        frame = read_csv(self.csv_path)
        absent = [name for name in (hp.image_column, hp.label_column) if name not in frame.columns]
        if absent:
            raise ValueError(
                f"{where} has no column {' or '.join(map(repr, absent))}; its columns are {list(frame.columns)}. "
                "Name the image and label columns with image_column= and label_column=."
            )
        for column in (hp.image_column, hp.label_column):
            empty = [int(i) for i in frame[column].isna().to_numpy().nonzero()[0]]
            if empty:
                raise ValueError(
                    f"{where}: column {column!r} is empty in data row(s) {_rows(empty)} (rows counted from 1 after "
                    "the header)"
                )
        paths = [os.path.join(self.data_dir, os.path.expanduser(str(path))) for path in frame[hp.image_column]]
        missing = [i for i, path in enumerate(paths) if not os.path.isfile(path)]
        if missing:
            listed = "; ".join(f"data row {i + 1}: {os.path.abspath(paths[i])}" for i in missing[:_LISTED])
            more = f"; and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
            raise FileNotFoundError(
                f"{len(missing)} image file(s) named in column {hp.image_column!r} of {where} not found ({listed}"
                f"{more}; rows counted from 1 after the header). Put the images there, or fix the paths (relative "
                f"ones are read from {os.path.abspath(self.data_dir)}/)."
            )
        classes, targets = _encode_labels(frame[hp.label_column], where, hp.label_column)
        if len(classes) < 2:  # one class would train to a "perfect" accuracy that means nothing
            raise ValueError(f"{where} holds {len(classes)} label(s) {classes}; a classifier needs at least two")
        if hp.split_column in frame.columns:
            splits = [str(value).strip() for value in frame[hp.split_column]]
            wrong = [i for i, value in enumerate(splits) if value not in SPLITS]
            if wrong:
                raise ValueError(
                    f"{where}: column {hp.split_column!r} holds {sorted({splits[i] for i in wrong})} in data row(s) "
                    f"{_rows(wrong)}; each row's split must be one of {', '.join(SPLITS)}"
                )
            if "train" not in splits:
                raise ValueError(f"{where}: no row has split 'train' in column {hp.split_column!r}")
            self._splits = splits
        self._paths, self._targets, self._classes = paths, targets, classes

    def _divide(self, indices: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
        """Random parts of ``indices`` of the given fractions (of each class when stratified), then the rest; each
        part sorted."""
        generator = torch.Generator().manual_seed(seed)
        if self.hparams.stratified:
            groups = [indices[self._targets[indices] == label] for label in range(len(self.classes))]
        else:
            groups = [indices]
        parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
        for group in groups:
            group = group[torch.randperm(len(group), generator=generator)]
            start = 0
            for part, fraction in zip(parts, fractions, strict=False):
                count = round(len(group) * fraction)
                part.append(group[start : start + count])
                start += count
            parts[-1].append(group[start:])
        return [torch.cat(part).sort().values for part in parts]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._read()
        hp = self.hparams
        if self._splits is None:
            test, val, train = self._divide(
                torch.arange(len(self._paths)), [hp.test_fraction, hp.val_fraction], hp.seed
            )
        else:
            rows = {
                name: torch.tensor([i for i, s in enumerate(self._splits) if s == name], dtype=torch.long)
                for name in SPLITS
            }
            train, val, test = rows["train"], rows["val"], rows["test"]
            if not len(val):
                val, train = self._divide(train, [hp.val_fraction], hp.seed)
        if not len(train):
            raise ValueError(f"{os.path.abspath(self.csv_path)}: no rows left for training with these fractions")
        pool = _CSVImages(self._paths, self._targets, self.in_channels)
        train_tf, eval_tf = self._transform(train=True), self._transform(train=False)
        self._train_targets = self._targets[train]
        self.datasets = {
            "train": _Transformed(Subset(pool, train.tolist()), train_tf),
            "val": _Transformed(Subset(pool, val.tolist()), eval_tf),
        }
        if len(test):
            self.datasets["test"] = _Transformed(Subset(pool, test.tolist()), eval_tf)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if self.datasets and split not in self.datasets:
            raise RuntimeError(
                f"{os.path.abspath(self.csv_path)} has no {split!r} rows (test_fraction=0, or a split "
                f"column without {split!r} rows)"
            )
        if not (shuffle and self.hparams.balanced_sampler):
            return super()._loader(split, shuffle)
        hp = self.hparams
        workers = self.default_num_workers() if hp.num_workers is None else hp.num_workers
        pin = torch.cuda.is_available() if hp.pin_memory is None else hp.pin_memory
        options = dict(batch_size=self.batch_size, num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
        counts = torch.bincount(self._train_targets, minlength=len(self.classes)).double()
        weights = (1 / counts)[self._train_targets]  # (N_train,): each class sums to 1
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Lightning replaces a RandomSampler (BalancedSampler is one) by a plain DistributedSampler, losing the
            # weights; any other sampler it wraps and shards. The seeded generator gives every rank the same draws.
            generator = torch.Generator().manual_seed(hp.seed)
            sampler = WeightedRandomSampler(weights, len(weights), generator=generator)
            return DataLoader(self.datasets["train"], sampler=sampler, **options)
        # The loader's generator seeds the workers from the epoch seed, as for its own shuffling sampler.
        sampler = BalancedSampler(weights)
        return ResumableLoader(self.datasets["train"], sampler=sampler, generator=torch.Generator(), **options)


def _encode_labels(labels: Any, where: str, column: str) -> tuple[list[str], torch.Tensor]:
    """Class names (sorted) and the class index of each row, from a pandas column of strings or integers."""
    import pandas as pd

    if pd.api.types.is_float_dtype(labels):
        fractional = [int(i) for i in (labels != labels.round()).to_numpy().nonzero()[0]]
        if fractional:
            raise ValueError(
                f"{where}: column {column!r} holds {labels.iloc[fractional[0]]} in data row "
                f"{fractional[0] + 1}; labels are strings or integers"
            )
        labels = labels.astype("int64")
    if not (pd.api.types.is_integer_dtype(labels) or pd.api.types.is_bool_dtype(labels)):
        labels = labels.astype(str)
    values = sorted(set(labels.tolist()))  # integers in numeric order: 2 before 10
    index = {value: position for position, value in enumerate(values)}
    return [str(value) for value in values], torch.tensor([index[value] for value in labels.tolist()])
