"""Text classification: labelled texts from a folder per class or a CSV file, and an embedded Shakespeare task.

A text becomes word ids: :func:`~datamodules.captions.tokenize` with punctuation kept (lower-cased words, each
punctuation mark a token), then the ids of a vocabulary built from the training split alone (``<pad>`` = 0,
``<unk>`` = 1, then the words seen at least ``min_freq`` times, most frequent first, at most ``max_vocab`` entries);
a word it lacks reads as ``<unk>``, and a text keeps its first ``max_length`` tokens. A batch is a
:class:`~datamodules.sequence.SequenceBatch` from :func:`~datamodules.sequence.pad_collate`: ids ``(B, T)`` padded
with 0, class indices ``(B,)`` and lengths ``(B,)``, what :class:`zoo.tasks.SequenceClassifier` models read.

Splits: a layout's own ``train``/``val``/``test``; a missing ``test`` (``test_fraction``) and then a missing ``val``
(``val_fraction``) are carved from ``train``, stratified by class and drawn by ``seed`` (:func:`split_stratified`).
Classes are the training labels sorted (integers in numeric order); a label of another split that training lacks is
an error.

- :class:`TextFolderDataModule`: ``<data_dir>/<class>/*.txt`` or ``<data_dir>/{train,val,test}/<class>/*.txt``
  (IMDB's ``aclImdb`` as unpacked; its ``unsup`` folder of unlabelled reviews is left out), :func:`read_text_folders`.
- :class:`TextCSVDataModule`: a CSV with a header, a text column and a label column (:func:`read_text_csv`).
- :class:`ShakespeareSpeakersDataModule`: "which character speaks this speech", the 1,158 speeches of eight
  characters of eight plays in Tiny Shakespeare, embedded in ``datamodules/embedded/shakespeare_speakers.tsv.gz``
  (92 KB; no files, no network). :func:`parse_speeches` reads Tiny Shakespeare's format; the embedded file is
  regenerated from ``../shared/data/tinyshakespeare/input.txt`` by::

      python -c "from datamodules.text_classification import write_shakespeare_speakers; write_shakespeare_speakers()"

>>> dm = ShakespeareSpeakersDataModule(batch_size=4)
>>> dm.num_classes, dm.vocab[:4], dm.vocab_size
(8, ['<pad>', '<unk>', ',', '.'], 1500)
>>> dm.setup("fit")
>>> batch = next(iter(dm.val_dataloader()))
>>> batch.inputs.dtype, batch.targets.shape, bool(batch.lengths.max() == batch.inputs.shape[1])
(torch.int64, torch.Size([4]), True)
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from datamodules.base import SavesPreprocessing, SplitLoaders, check_batch_and_split, make_loader, read_csv
from datamodules.captions import build_vocab, tokenize
from datamodules.sequence import SequenceDataset, pad_collate
from datamodules.text import DEFAULT_TEXT, read_text

PAD_ID, UNK_ID = 0, 1
#: The tokens before the words of a text-classification vocabulary (ids 0 and 1).
TEXT_SPECIALS = ("<pad>", "<unk>")
SPLITS = ("train", "val", "test")
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embedded")
SHAKESPEARE_SPEAKERS_FILE = os.path.join(EMBEDDED_DIR, "shakespeare_speakers.tsv.gz")
#: The characters of the embedded task: the most frequent speaker of each of eight of the nine plays in Tiny
#: Shakespeare. Henry VI part 3 (Warwick, 98) is left out: Gloucester, Richard III's lead, speaks in it too.
SHAKESPEARE_SPEAKERS = (
    "GLOUCESTER",  # Richard III (about 160), Henry VI part 3 (about 50): 211 speeches
    "DUKE VINCENTIO",  # Measure for Measure: 189
    "MENENIUS",  # Coriolanus: 161
    "ROMEO",  # Romeo and Juliet: 160
    "PETRUCHIO",  # The Taming of the Shrew: 155
    "LEONTES",  # The Winter's Tale: 124
    "KING RICHARD II",  # Richard II: 98
    "PROSPERO",  # The Tempest: 60
)
Texts = tuple[list[str], list[str]]


# --- readers ----------------------------------------------------------------------------------------------------------
def _read_utf8(path: str) -> str:
    """The text of one file; an error names the file when it is not UTF-8 or holds nothing but spaces."""
    where = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{where} is not UTF-8 text (byte {error.start}); save it as UTF-8") from error
    if not text.strip():
        raise ValueError(f"{where} is empty; every text file needs some text")
    return text


def read_text_folder(root: str, ignore: Sequence[str] = ("unsup",)) -> Texts:
    """Texts and labels of ``<root>/<class>/*.txt``: one folder per class, named as the class, in sorted order.

    Args:
        root: the folder of class folders.
        ignore: class folder names left out (IMDB's ``unsup``, unlabelled reviews); hidden folders are too.

    Raises:
        FileNotFoundError: naming ``root`` when it is not a folder or holds no class folder.
        ValueError: naming the class folder without ``.txt`` files, or the file that is not UTF-8 or is empty.
    """
    where = os.path.abspath(root)
    layout = "one folder of .txt files per class (<root>/<class>/*.txt)"
    if not os.path.isdir(root):
        raise FileNotFoundError(f"No folder at {where}; put {layout} there")
    classes = sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir() and entry.name not in ignore and not entry.name.startswith(".")
    )
    if not classes:
        raise FileNotFoundError(f"{where} holds no class folder; put {layout} there")
    texts, labels = [], []
    for name in classes:
        folder = os.path.join(root, name)
        files = sorted(
            entry.name for entry in os.scandir(folder) if entry.is_file() and entry.name.lower().endswith(".txt")
        )
        if not files:
            raise ValueError(f"class folder {os.path.abspath(folder)} holds no .txt file; every class needs some")
        texts += [_read_utf8(os.path.join(folder, file)) for file in files]
        labels += [name] * len(files)
    return texts, labels


def read_text_folders(root: str, ignore: Sequence[str] = ("unsup",)) -> dict[str, Texts]:
    """The splits of a text folder: ``<root>/train/<class>/*.txt`` with optional ``<root>/val/...`` and
    ``<root>/test/...`` when ``<root>/train`` is a folder (IMDB's ``aclImdb``), else ``<root>/<class>/*.txt`` as the
    training split. Each split is read by :func:`read_text_folder`.
    """
    if not os.path.isdir(os.path.join(root, "train")):
        return {"train": read_text_folder(root, ignore)}
    return {
        split: read_text_folder(os.path.join(root, split), ignore)
        for split in SPLITS
        if split == "train" or os.path.isdir(os.path.join(root, split))
    }


def _rows(rows: Sequence[int]) -> str:
    listed = ", ".join(str(row + 1) for row in rows[:5])
    return listed + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def read_text_csv(path: str, text_column: str = "text", label_column: str = "label") -> Texts:
    """Texts and labels (as strings) of a CSV file with a header row, one text per row.

    Raises:
        FileNotFoundError: naming the file when it is missing.
        ValueError: naming the file when it is not UTF-8 CSV, lacks a named column (listing those it has), or a row
            has no text or no label (naming the rows, counted from 1 after the header), or a label is fractional.
    """
    import pandas as pd

    where = os.path.abspath(path)
    frame = read_csv(path)
    absent = [name for name in (text_column, label_column) if name not in frame.columns]
    if absent:
        raise ValueError(
            f"{where} has no column {' or '.join(map(repr, absent))}; its columns are {list(frame.columns)}. Name the "
            "text and label columns with text_column= and label_column="
        )
    texts = frame[text_column]
    blank = [int(i) for i in (texts.isna() | texts.astype(str).str.strip().eq("")).to_numpy().nonzero()[0]]
    if blank:
        raise ValueError(f"{where}: column {text_column!r} is empty in data row(s) {_rows(blank)}")
    labels = frame[label_column]
    missing = [int(i) for i in labels.isna().to_numpy().nonzero()[0]]
    if missing:
        raise ValueError(f"{where}: column {label_column!r} is empty in data row(s) {_rows(missing)}")
    if pd.api.types.is_float_dtype(labels):
        fractional = [int(i) for i in (labels != labels.round()).to_numpy().nonzero()[0]]
        if fractional:
            raise ValueError(
                f"{where}: column {label_column!r} holds {labels.iloc[fractional[0]]} in data row "
                f"{fractional[0] + 1}; labels are strings or integers"
            )
        labels = labels.astype("int64")
    return [str(text) for text in texts], [str(label).strip() for label in labels]


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """The distinct labels sorted: in numeric order when all are integers (``"2"`` before ``"10"``).

    >>> sorted_labels(["10", "2", "2", "1"]), sorted_labels(["neg", "pos", "neg"])
    (['1', '2', '10'], ['neg', 'pos'])
    """
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def split_stratified(
    labels: Sequence[Hashable], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Disjoint ``(train, val, test)`` index lists of ``labels``, each class split in the given proportions.

    The test and validation counts are ``round(n * fraction)`` (at least one for a fraction above 0), shared among
    the classes in proportion to their sizes (largest remainders first); each class's samples are drawn by ``seed``.
    The same ``labels`` and ``seed`` give the same split everywhere. Each list is sorted.

    >>> split_stratified(["a"] * 6 + ["b"] * 4, 0.2, 0.2, seed=0)
    ([0, 1, 3, 4, 6, 7], [5, 8], [2, 9])
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need val_fraction and test_fraction in [0, 1) with a sum below 1, got {val_fraction} and {test_fraction}"
        )
    n = len(labels)
    groups: dict[Hashable, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    counts = [len(members) for members in groups.values()]
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} texts cannot give {n_val} for validation, {n_test} for test and some to train")
    test_counts = _shares(counts, n_test)
    val_counts = _shares([c - t for c, t in zip(counts, test_counts, strict=True)], n_val)
    generator = torch.Generator().manual_seed(seed)
    train, val, test = [], [], []
    for members, n_t, n_v in zip(groups.values(), test_counts, val_counts, strict=True):
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        test += order[:n_t]
        val += order[n_t : n_t + n_v]
        train += order[n_t + n_v :]
    return sorted(train), sorted(val), sorted(test)


def _shares(counts: Sequence[int], total: int) -> list[int]:
    """``total`` shared among groups of ``counts`` in proportion (largest remainder); no share exceeds its count."""
    size = sum(counts)
    quotas = [count * total / size for count in counts]
    shares = [int(quota) for quota in quotas]
    by_remainder = sorted(range(len(counts)), key=lambda i: (shares[i] - quotas[i], i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


# --- Tiny Shakespeare's speeches --------------------------------------------------------------------------------------
def parse_speeches(text: str, source: str = "the text") -> list[tuple[str, str]]:
    """``(speaker, speech)`` of each speech of Tiny Shakespeare's format: a line ``NAME:``, then the speech's lines,
    blank lines between speeches. A speech keeps its line breaks; lines lose trailing spaces. A name followed by a
    blank line (Tiny Shakespeare has 125, where a speech was cut) gives no speech.

    Raises:
        ValueError: naming ``source`` and the line where a speech does not start with ``NAME:``.

    >>> parse_speeches("First Citizen:\\nSpeak, speak.\\n\\nAll:\\nResolved.\\nresolved.\\n")
    [('First Citizen', 'Speak, speak.'), ('All', 'Resolved.\\nresolved.')]
    """
    speeches: list[tuple[str, str]] = []
    speaker, lines = None, []
    for number, line in enumerate([*text.splitlines(), ""], 1):
        line = line.rstrip()
        if not line:
            if lines:  # a name without lines (125 in Tiny Shakespeare, where an aside was cut) is no speech
                speeches.append((speaker, "\n".join(lines)))
            speaker, lines = None, []
        elif speaker is None:
            if not line.endswith(":") or not line[:-1].strip():
                raise ValueError(
                    f"{source}, line {number}: a speech starts with its speaker's name and a colon (`NAME:`), got "
                    f"{line[:80]!r}"
                )
            speaker = line[:-1].strip()
        else:
            lines.append(line)
    return speeches


def write_shakespeare_speakers(
    source: str = DEFAULT_TEXT, path: str = SHAKESPEARE_SPEAKERS_FILE, speakers: Sequence[str] = SHAKESPEARE_SPEAKERS
) -> int:
    """Write the speeches of ``speakers`` in ``source`` (Tiny Shakespeare) to ``path`` in file order, as a gzipped
    tab-separated file with a header ``speaker<TAB>speech`` (speeches with line breaks quoted as CSV does); returns
    how many. The bytes depend on the speeches alone (no time stamp), so a rerun rewrites the same file."""
    wanted = set(speakers)
    rows = [(name, speech) for name, speech in parse_speeches(read_text(source), source) if name in wanted]
    absent = wanted - {name for name, _ in rows}
    if absent:
        raise ValueError(f"{source} has no speech of {sorted(absent)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["speaker", "speech"])
    writer.writerows(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as file, gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0) as archive:
        archive.write(buffer.getvalue().encode("utf-8"))
    return len(rows)


def read_shakespeare_speakers(path: str = SHAKESPEARE_SPEAKERS_FILE) -> Texts:
    """The speeches and speakers of the file :func:`write_shakespeare_speakers` writes (the embedded one by default).

    Raises:
        FileNotFoundError: naming ``path`` and the command that writes it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'No speeches file at {os.path.abspath(path)}; write it from Tiny Shakespeare with: python -c "from '
            'datamodules.text_classification import write_shakespeare_speakers; write_shakespeare_speakers()"'
        )
    with gzip.open(path, "rt", encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t"))
    if not rows or rows[0] != ["speaker", "speech"] or any(len(row) != 2 for row in rows[1:]):
        raise ValueError(f"{os.path.abspath(path)} is not a speeches file: a header speaker<TAB>speech, then rows")
    return [speech for _, speech in rows[1:]], [speaker for speaker, _ in rows[1:]]


def _pick(texts: Sequence[str], labels: Sequence[str], rows: Sequence[int]) -> Texts:
    return [texts[i] for i in rows], [labels[i] for i in rows]


# --- words and ids ----------------------------------------------------------------------------------------------------
def encode_text(text: str, vocab: Mapping[str, int], max_length: int, lowercase: bool = True) -> torch.Tensor:
    """The ids (long) of the first ``max_length`` tokens of ``text`` (``<unk>`` for words not in ``vocab``); a text
    without tokens reads as one ``<unk>``, so every sequence has a step.

    >>> encode_text("Speak, speak!", {"<pad>": 0, "<unk>": 1, "speak": 2, ",": 3}, max_length=3).tolist()
    [2, 3, 2]
    """
    tokens = tokenize(text, punctuation=True, lowercase=lowercase)[:max_length]
    return torch.tensor([vocab.get(token, UNK_ID) for token in tokens] or [UNK_ID], dtype=torch.long)


# --- the datamodules --------------------------------------------------------------------------------------------------
class TextClassificationDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of the text-classification datamodules: splits, the training vocabulary, padded token batches.

    A subclass implements :meth:`read_splits`. What the CLI links into the model (``num_classes``, ``vocab_size``,
    ``in_features`` = 1, ``max_length``) can be read right after construction: the first read reads the texts, once.

    Args:
        batch_size: texts per batch.
        max_length: the most tokens a text keeps (the first ones).
        min_freq: the fewest times a training word occurs to get its own id (rarer ones read as ``<unk>``).
        max_vocab: the most ids, the two specials included, keeping the most frequent words (``None``: no limit).
        lowercase: lower-case the texts before splitting them into tokens.
        val_fraction: fraction of the texts carved from ``train`` for validation where the layout has no ``val``.
        test_fraction: fraction carved from ``train`` for testing where the layout has no ``test``.
        num_workers: loader worker processes (the ids are in memory: none needed).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        seed: seed of the carved splits.

    Attributes:
        vocab: ``<pad>``, ``<unk>``, then the training split's words, most frequent first (id = position).
        class_names: the training labels sorted (integers in numeric order); class index = position.
    """

    in_features = 1

    def __init__(
        self,
        batch_size: int = 32,
        max_length: int = 256,
        min_freq: int = 1,
        max_vocab: int | None = 20_000,
        lowercase: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, val_fraction, test_fraction)
        for name, value in (("max_length", max_length), ("min_freq", min_freq)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 3):
            raise ValueError(
                f"max_vocab must be an integer of at least 3 (two specials and a word) or None, got {max_vocab!r}"
            )
        # Kept for checkpoints, not merged into the logged hparams (the model has its own max_length).
        self.save_hyperparameters(logger=False)
        self.batch_size, self.max_length = batch_size, max_length
        self._splits: dict[str, tuple[list[str], torch.Tensor]] | None = None
        self._vocab: list[str] = []
        self._classes: list[str] = []
        self.datasets: dict[str, SequenceDataset] = {}

    def read_splits(self) -> dict[str, Texts]:
        """Texts and labels of ``train`` and, where the layout has them, ``val`` and ``test``."""
        raise NotImplementedError

    def describe(self) -> str:
        """Where the texts come from, for error messages."""
        return type(self).__name__

    def tokenize(self, text: str) -> list[str]:
        """The tokens of ``text``: words and punctuation marks, lower-cased when ``lowercase``."""
        return tokenize(text, punctuation=True, lowercase=self.hparams.lowercase)

    def _read(self) -> dict[str, tuple[list[str], torch.Tensor]]:
        if self._splits is not None:
            return self._splits
        hp, given = self.hparams, self.read_splits()
        texts, labels = given["train"]
        classes = sorted_labels(labels)
        if len(classes) < 2:  # one class would train to a "perfect" accuracy that means nothing
            raise ValueError(f"{self.describe()}: the training texts have {len(classes)} label(s) {classes}; need two")
        index = {name: position for position, name in enumerate(classes)}
        for split, (_, split_labels) in given.items():
            unknown = sorted(set(split_labels) - set(index))
            if unknown:
                raise ValueError(f"{self.describe()}: the {split} split has labels {unknown} that training lacks")
        carve_val = 0.0 if "val" in given else hp.val_fraction
        carve_test = 0.0 if "test" in given else hp.test_fraction
        carved = dict(zip(SPLITS, split_stratified(labels, carve_val, carve_test, hp.seed), strict=True))
        parts = {
            split: given[split] if split in given and split != "train" else _pick(texts, labels, carved[split])
            for split in SPLITS
        }
        splits = {
            split: (split_texts, torch.tensor([index[label] for label in split_labels], dtype=torch.long))
            for split, (split_texts, split_labels) in parts.items()
            if split_texts
        }
        self._vocab = build_vocab(
            splits["train"][0], hp.min_freq, specials=TEXT_SPECIALS, max_size=hp.max_vocab, tokenizer=self.tokenize
        )
        self._classes, self._splits = classes, splits
        return splits

    @property
    def vocab(self) -> list[str]:
        """The tokens in id order (see the class docstring)."""
        self._read()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        """Number of ids, the specials included."""
        return len(self.vocab)

    @property
    def class_names(self) -> list[str]:
        """The class names in index order."""
        self._read()
        return self._classes

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Token ids of ``vocab`` (words and punctuation, lower-cased when ``lowercase``), at most ``max_length``."""
        return {
            "input": "tokens",
            "vocab_size": self.vocab_size,
            "vocab": [str(token) for token in self.vocab],
            "classes": [str(name) for name in self.class_names],
            "lowercase": bool(self.hparams.lowercase),
            "max_length": int(self.max_length),
            "tokenizer": "words and punctuation marks",
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
        }

    def encode(self, text: str) -> torch.Tensor:
        """The ids of ``text``, as the loaders give them."""
        return encode_text(
            text, {token: i for i, token in enumerate(self.vocab)}, self.max_length, self.hparams.lowercase
        )

    def prepare_data(self) -> None:
        self._read()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        ids = {token: position for position, token in enumerate(self.vocab)}
        for split, (texts, targets) in self._read().items():
            sequences = [encode_text(text, ids, self.max_length, self.hparams.lowercase) for text in texts]
            self.datasets[split] = SequenceDataset(
                sequences,
                targets,
                self.num_classes,
                self.vocab_size,
                max_length=self.max_length,
                name=f"{type(self).__name__} {split} split",
            )

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            reason = "setup() was not called; the Trainer calls it" if not self.datasets else "it holds no texts"
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split ({reason})")
        hp = self.hparams
        return make_loader(self.datasets[split], self.batch_size, shuffle, hp.num_workers, hp.pin_memory, pad_collate)


class TextFolderDataModule(TextClassificationDataModule):
    """Texts in a folder per class, ``<data_dir>/<class>/*.txt``, or in split folders (IMDB's ``aclImdb``).

    Split folders, ``<data_dir>/{train,val,test}/<class>/*.txt``, are read when ``<data_dir>/train`` exists (IMDB's
    ``unsup`` folder is left out); a missing ``val``/``test`` is carved from ``train`` (see the module docstring).

    Args:
        data_dir: the root folder.
        **kwargs: the base's arguments (``batch_size``, ``max_length``, ``min_freq``, ``max_vocab``, ``lowercase``,
            ``val_fraction``, ``test_fraction``, ``num_workers``, ``pin_memory``, ``seed``), see
            :class:`TextClassificationDataModule`.
    """

    def __init__(self, data_dir: str = "data", **kwargs: Any) -> None:
        # the other arguments are the base's (jsonargparse and LightningCLI follow **kwargs to its signature)
        super().__init__(**kwargs)
        self.data_dir = os.path.expanduser(data_dir)

    def describe(self) -> str:
        return os.path.abspath(self.data_dir)

    def read_splits(self) -> dict[str, Texts]:
        return read_text_folders(self.data_dir)


class TextCSVDataModule(TextClassificationDataModule):
    """Texts and labels in the columns of a CSV file with a header row (labels: strings or integers).

    Args:
        path: the CSV file; its rows are split into train, val and test by the fractions.
        text_column: the column of texts.
        label_column: the column of labels.
        test_path: a CSV file of the same columns to test on (then nothing is carved for testing).
        **kwargs: the base's arguments, see :class:`TextClassificationDataModule`.
    """

    def __init__(
        self,
        path: str,
        text_column: str = "text",
        label_column: str = "label",
        test_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = os.path.expanduser(path)
        self.test_path = os.path.expanduser(test_path) if test_path else None

    def describe(self) -> str:
        return os.path.abspath(self.path)

    def read_splits(self) -> dict[str, Texts]:
        columns = (self.hparams.text_column, self.hparams.label_column)
        splits = {"train": read_text_csv(self.path, *columns)}
        if self.test_path:
            splits["test"] = read_text_csv(self.test_path, *columns)
        return splits


class ShakespeareSpeakersDataModule(TextClassificationDataModule):
    """Which character speaks a speech: eight characters of eight plays of Tiny Shakespeare (embedded; no files).

    1,158 speeches (:data:`SHAKESPEARE_SPEAKERS`: Gloucester 211 down to Prospero 60; the largest class is 18%),
    of 21 tokens at the median and 141 at the 95th percentile (words and punctuation). Split 70/15/15 by class
    (810, 174 and 174 speeches). The training split has about 2,000 words seen at least twice, so its 1,498 most
    frequent ones fill the vocabulary of 1,500 ids whatever the ``seed``, and the presets' sizes hold for any split.

    Args:
        batch_size: texts per batch.
        max_length: the most tokens a speech keeps (128 keeps 94% of them whole; 256, 99%, at five times the cost
            of a Transformer's step, padded batches being as long as their longest speech).
        max_vocab: the most ids, specials included.
        val_fraction: fraction of the speeches for validation.
        test_fraction: fraction of the speeches for testing.
        **kwargs: the base's other arguments (``min_freq``, ``lowercase``, ``num_workers``, ``pin_memory``,
            ``seed``), see :class:`TextClassificationDataModule`.
    """

    def __init__(
        self,
        batch_size: int = 32,
        max_length: int = 128,
        max_vocab: int | None = 1_500,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            max_length=max_length,
            max_vocab=max_vocab,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            **kwargs,
        )

    def describe(self) -> str:
        return SHAKESPEARE_SPEAKERS_FILE

    def read_splits(self) -> dict[str, Texts]:
        return {"train": read_shakespeare_speakers()}
