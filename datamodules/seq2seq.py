"""Generated sequence-to-sequence tasks with exact answers: reverse, sort, and addition of digit strings.

- ``reverse``: ``"3141"`` -> ``"1413"``; ``sort``: ``"3141"`` -> ``"1134"``; ``addition``: ``"12+345"`` -> ``"357"``
  (operands of ``min_length`` to ``max_length`` digits, no leading zeros).

Ids 0-2 are ``PAD``, ``BOS`` and ``EOS``; id ``3 + i`` is ``vocab[i]`` (the convention of
:mod:`zoo.tasks.seq2seq`). A batch is ``(src, tgt, src_lengths)``: sources padded with ``PAD``, each target followed
by ``EOS`` and padded with ``PAD``. The validation and test sources are held out: none of them occurs in the training
set (nor a test source in validation), so exact-match accuracy measures generalization, not recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SavesPreprocessing, make_loader

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3
Seq2SeqName = Literal["reverse", "sort", "addition"]
DIGITS = "0123456789"


class Seq2SeqBatch(NamedTuple):
    """A padded batch: ``src`` ``(B, S)``, ``tgt`` ``(B, T)`` (answers, ``EOS``, ``PAD``), ``src_lengths`` ``(B,)``."""

    src: torch.Tensor
    tgt: torch.Tensor
    src_lengths: torch.Tensor


def answer(task: Seq2SeqName, source: str) -> str:
    """The exact answer of ``task`` for ``source``.

    >>> answer("reverse", "123"), answer("sort", "312"), answer("addition", "12+345")
    ('321', '123', '357')
    """
    if task == "reverse":
        return source[::-1]
    if task == "sort":
        return "".join(sorted(source))
    if task == "addition":
        left, right = source.split("+")
        return str(int(left) + int(right))
    raise ValueError(f"Unknown task {task!r}; choose reverse, sort or addition.")


class PairDataset(Dataset):
    """Source/target strings, encoded once to id tensors."""

    def __init__(self, pairs: Sequence[tuple[str, str]], vocab: str) -> None:
        table = {char: NUM_SPECIAL + index for index, char in enumerate(vocab)}
        self.pairs = list(pairs)
        self.sources = [torch.tensor([table[c] for c in src], dtype=torch.long) for src, _ in self.pairs]
        self.targets = [torch.tensor([table[c] for c in tgt] + [EOS], dtype=torch.long) for _, tgt in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sources[index], self.targets[index]


def collate_pairs(samples: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Seq2SeqBatch:
    """Pad sources and targets with ``PAD``."""
    sources, targets = zip(*samples, strict=True)
    lengths = torch.tensor([len(source) for source in sources])
    return Seq2SeqBatch(
        pad_sequence(list(sources), batch_first=True, padding_value=PAD),
        pad_sequence(list(targets), batch_first=True, padding_value=PAD),
        lengths,
    )


class Seq2SeqDataModule(SavesPreprocessing, L.LightningDataModule):
    """Generated digit-string tasks with exact answers.

    Args:
        task: ``"reverse"``, ``"sort"`` or ``"addition"``.
        min_length: the fewest digits of a sequence (of an operand, for addition).
        max_length: the most digits of a sequence (of an operand, for addition).
        num_train: training pairs.
        num_val: validation pairs (none of them in the training set).
        num_test: test pairs (in neither the training nor the validation set).
        batch_size: pairs per batch.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        seed: seed of the generated pairs.

    Attributes:
        vocab: the characters of sources and targets.
        max_length: the longest source (``2 * max_length + 1`` for addition), linked into the model.
    """

    def __init__(
        self,
        task: Seq2SeqName = "reverse",
        min_length: int = 1,
        max_length: int = 12,
        num_train: int = 20000,
        num_val: int = 1000,
        num_test: int = 1000,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if task not in ("reverse", "sort", "addition"):
            raise ValueError(f"Unknown task {task!r}; choose reverse, sort or addition.")
        if not 1 <= min_length <= max_length or min(num_train, num_val, num_test, batch_size) < 1:
            raise ValueError(
                "need 1 <= min_length <= max_length and positive num_train, num_val, num_test and batch_size, got "
                f"{min_length}, {max_length}, {num_train}, {num_val}, {num_test}, {batch_size}"
            )
        self.save_hyperparameters(logger=False)
        self.task, self.min_length, self.digits = task, min_length, max_length
        self.vocab = DIGITS + "+" if task == "addition" else DIGITS
        self.max_length = 2 * max_length + 1 if task == "addition" else max_length
        self.batch_size = batch_size
        self.datasets: dict[str, PairDataset] = {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Sources as text in ``vocab``, of at most ``max_length`` characters."""
        return {"input": "text", "vocab": self.vocab, "max_length": self.max_length}

    def _number(self, generator: torch.Generator) -> str:
        length = int(torch.randint(self.min_length, self.digits + 1, (1,), generator=generator))
        first = str(int(torch.randint(1 if length > 1 else 0, 10, (1,), generator=generator)))
        rest = torch.randint(0, 10, (length - 1,), generator=generator).tolist()
        return first + "".join(map(str, rest))

    def _source(self, generator: torch.Generator) -> str:
        if self.task == "addition":
            return f"{self._number(generator)}+{self._number(generator)}"
        length = int(torch.randint(self.min_length, self.digits + 1, (1,), generator=generator))
        return "".join(map(str, torch.randint(0, 10, (length,), generator=generator).tolist()))

    def generate_pairs(self, count: int, exclude: set[str], generator: torch.Generator) -> list[tuple[str, str]]:
        """``count`` distinct pairs whose sources are not in ``exclude``; an error when the space runs out."""
        sources: dict[str, None] = {}
        attempts = 0
        while len(sources) < count:
            attempts += 1
            if attempts > 20 * count + 1000:
                raise ValueError(
                    f"cannot draw {count} distinct {self.task} sources of {self.min_length}-{self.digits} digits "
                    f"outside the other splits; raise max_length or lower num_train/num_val/num_test"
                )
            source = self._source(generator)
            if source not in exclude:
                sources[source] = None
        return [(source, answer(self.task, source)) for source in sources]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        generator = torch.Generator().manual_seed(self.hparams.seed)
        hp = self.hparams
        train = self.generate_pairs(hp.num_train, set(), generator)
        seen = {source for source, _ in train}
        val = self.generate_pairs(hp.num_val, seen, generator)
        seen |= {source for source, _ in val}
        test = self.generate_pairs(hp.num_test, seen, generator)
        for split, pairs in (("train", train), ("val", val), ("test", test)):
            self.datasets[split] = PairDataset(pairs, self.vocab)

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (or setup() was not called)")
        hp = self.hparams
        return make_loader(self.datasets[split], self.batch_size, shuffle, hp.num_workers, hp.pin_memory, collate_pairs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
