"""Character-level text from any UTF-8 file, for language models (Tiny Shakespeare by default).

The text is split by position: the first ``1 - val_fraction - test_fraction`` trains, the next ``val_fraction``
validates and the last ``test_fraction`` tests (with ``test_fraction=0`` the test split is the validation text, as
in nanoGPT, whose 90/10 split this default matches). Training reads ``batches_per_epoch`` batches of windows at
random offsets each epoch (runs are long in steps, short in epochs); evaluation reads each split's text once, in
consecutive windows, the last one padded with target ``-100``. The vocabulary is the file's sorted characters,
available before any split is built, so the CLI links it into the model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from datamodules.base import SavesPreprocessing, check_batch_and_split, collate_batched, make_loader

IGNORE_INDEX = -100
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEXT = "../shared/data/tinyshakespeare/input.txt"
Batch = tuple[torch.Tensor, torch.Tensor]


def resolve_path(path: str) -> str:
    """``path`` as an absolute path: a relative one that is not found from the working directory is taken relative
    to the repository (so the default finds ``../shared/data`` from anywhere)."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.normpath(os.path.join(REPO_ROOT, path))


def read_text(path: str) -> str:
    """The text of a UTF-8 file; a missing, unreadable or empty file is an error naming the path and what to put
    there."""
    hint = (
        "Put a UTF-8 text file there (e.g. Tiny Shakespeare's input.txt, 1.1 MB, from "
        "github.com/karpathy/char-rnn/tree/master/data/tinyshakespeare) or pass another with --data.init_args.path."
    )
    full = resolve_path(path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"No text file at {full}. {hint}")
    try:
        with open(full, encoding="utf-8") as handle:
            text = handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{full} is not UTF-8 text ({error}). {hint}") from error
    if not text:
        raise ValueError(f"{full} is empty. {hint}")
    return text


class WindowDataset(Dataset):
    """Windows ``(x, y)`` of ``block_size`` ids over one id sequence, ``y`` shifted by one.

    Index ``i`` is the window starting at ``starts[i]``; a window running past the end is padded (ids 0, targets
    ``-100``). ``__getitems__`` gathers a whole batch in one indexing.
    """

    def __init__(self, ids: torch.Tensor, block_size: int, starts: torch.Tensor) -> None:
        self.ids, self.block_size, self.starts = ids, block_size, starts
        # One pad step at the end, so each window's last target exists; targets past the text are -100.
        self.inputs = torch.cat([ids, ids.new_zeros(block_size + 1)])
        self.targets = torch.cat([ids[1:], ids.new_full((block_size + 2,), IGNORE_INDEX)])

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> Batch:
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        offsets = self.starts[torch.as_tensor(indices)].unsqueeze(1) + torch.arange(self.block_size)  # (B, T)
        return self.inputs[offsets], self.targets[offsets]


class CharTextDataModule(SavesPreprocessing, L.LightningDataModule):
    """Character-level language modelling on one text file.

    Args:
        path: the text file; a relative path not found from the working directory is read relative to the
            repository (the default, ``../shared/data/tinyshakespeare/input.txt``). Nothing is downloaded.
        block_size: characters per window (the model's context).
        batch_size: windows per batch.
        batches_per_epoch: training batches of random windows per epoch.
        val_fraction: the part of the text, after the training part, that validates.
        test_fraction: the last part of the text, for testing (0: test on the validation text).
        num_workers: loader worker processes (in-memory slicing needs none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        seed: seed of the training windows' offsets.

    Attributes:
        vocab: the file's characters, sorted: id ``i`` is ``vocab[i]``.
        vocab_size: ``len(vocab)``.
    """

    def __init__(
        self,
        path: str = DEFAULT_TEXT,
        block_size: int = 64,
        batch_size: int = 12,
        batches_per_epoch: int = 250,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, val_fraction)
        if block_size < 1 or batches_per_epoch < 1 or not 0 <= test_fraction < 1 - val_fraction:
            raise ValueError(
                "need block_size >= 1, batches_per_epoch >= 1 and 0 <= test_fraction < 1 - val_fraction, got "
                f"{block_size}, {batches_per_epoch}, {test_fraction}"
            )
        self.save_hyperparameters(logger=False)
        self.path, self.block_size, self.batch_size = path, block_size, batch_size
        self._text: str | None = None
        self.datasets: dict[str, WindowDataset] = {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Text in the file's vocabulary (``vocab``)."""
        return {"input": "text", "vocab": self.vocab, "block_size": self.block_size}

    @property
    def text(self) -> str:
        """The file's text (read once)."""
        if self._text is None:
            self._text = read_text(self.path)
        return self._text

    @property
    def vocab(self) -> str:
        """The sorted characters of the text."""
        return "".join(sorted(set(self.text)))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text`` in this file's vocabulary."""
        table = {char: index for index, char in enumerate(self.vocab)}
        return torch.tensor([table[char] for char in text], dtype=torch.long)

    def split_ids(self) -> dict[str, torch.Tensor]:
        """The ids of the train, val and test parts of the text, split by position."""
        ids = self.encode(self.text)
        n = len(ids)
        n_test = round(n * self.hparams.test_fraction)
        n_val = round(n * self.hparams.val_fraction)
        n_train = n - n_val - n_test
        if n_train <= self.block_size or (n_val and n_val < 2):
            raise ValueError(
                f"{resolve_path(self.path)} has {n} characters: too few for block_size={self.block_size} with "
                f"val_fraction={self.hparams.val_fraction}; give a longer text or a smaller block_size"
            )
        parts = {"train": ids[:n_train], "val": ids[n_train : n_train + n_val]}
        parts["test"] = ids[n_train + n_val :] if n_test else parts["val"]
        return parts

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        block = self.block_size
        for split, ids in self.split_ids().items():
            if split == "train":  # every offset whose window and next-character target lie in the training text
                starts = torch.arange(len(ids) - block)
            else:  # consecutive windows covering every target once
                starts = torch.arange(0, max(1, len(ids) - 1), block)
            self.datasets[split] = WindowDataset(ids, block, starts)

    def _loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (or setup() was not called)")
        return make_loader(
            self.datasets[split],
            self.batch_size,
            False,
            self.hparams.num_workers,
            self.hparams.pin_memory,
            collate_batched,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets.get("train")
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__} has no 'train' split (or setup() was not called)")
        sampler = RandomSampler(
            dataset,
            replacement=True,
            num_samples=self.hparams.batches_per_epoch * self.batch_size,
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )
        workers = self.hparams.num_workers
        pin = torch.cuda.is_available() if self.hparams.pin_memory is None else self.hparams.pin_memory
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=workers > 0,
            collate_fn=collate_batched,
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
