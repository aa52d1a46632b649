"""Image captioning: the batches, the vocabulary, and Flickr8k/30k and COCO captions read from their files.

Every caption is a sequence of word ids (:func:`tokenize`, :func:`build_vocab`, :func:`encode_caption`): ids 0-3 are
``PAD``, ``BOS``, ``EOS`` and ``UNK`` (:data:`SPECIALS`), then the training split's words, most frequent first. A
caption's ids are its words (at most ``max_length``) followed by ``EOS``, never ``BOS`` (the model prepends it).

A batch is a :class:`CaptionBatch`: normalized images ``(B, C, H, W)``, one caption per image ``(B, T)`` and all the
captions of each image ``(B, R, T2)`` (the references of BLEU-like metrics), padded with ``PAD``. The training split
has one sample per (image, caption) pair, so an image comes once per caption in an epoch; validation, test and
predict have one sample per image, its first caption as ``captions``. Splits are drawn by image
(:func:`split_by_image`): no image is in two splits, so a test caption never describes a training image.

- :class:`FlickrCaptionsDataModule`: ``data_dir/captions.txt`` (Kaggle's ``image,caption`` CSV) or the original
  ``Flickr8k.token.txt``, and the images in ``data_dir/Images/``.
- :class:`COCOCaptionsDataModule`: a COCO captions JSON (``annotations/captions_train2017.json``) and its images.

The embedded set of digit scenes, on the same base, is in :mod:`datamodules.digit_scenes`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import lightning as L
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from datamodules.base import SavesPreprocessing, SplitLoaders, check_batch_and_split, decode_image, make_loader
from datamodules.image_folder import IMAGENET_MEAN, IMAGENET_STD

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
SPLITS = ("train", "val", "test")
# A word: letters and digits (any script), with one inner apostrophe part ("dog's", "know't").
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# ... or, where punctuation is kept, any other character that is not a space, as a token of its own.
_WORD_OR_MARK = re.compile(r"[^\W_]+(?:'[^\W_]+)?|[^\w\s]")


# --- words and ids ----------------------------------------------------------------------------------------------------
def tokenize(text: str, punctuation: bool = False, lowercase: bool = True) -> list[str]:
    """Word tokens of ``text``, lower-cased unless ``lowercase=False``; punctuation is dropped, or kept with
    ``punctuation=True`` as one token per mark.

    >>> tokenize("A dog's ball, on 2 stairs .")
    ['a', "dog's", 'ball', 'on', '2', 'stairs']
    >>> tokenize("Speak, speak! 'Tis Romeo.", punctuation=True, lowercase=False)
    ['Speak', ',', 'speak', '!', "'", 'Tis', 'Romeo', '.']
    """
    pattern = _WORD_OR_MARK if punctuation else _WORD
    return pattern.findall(text.lower() if lowercase else text)


def build_vocab(
    captions: Iterable[str],
    min_count: int = 1,
    specials: Sequence[str] = SPECIALS,
    max_size: int | None = None,
    tokenizer: Callable[[str], list[str]] = tokenize,
) -> list[str]:
    """``specials`` (:data:`SPECIALS` by default), then the words occurring at least ``min_count`` times, most
    frequent first (ties in alphabetical order). A word's id is its index; rarer words are read as ``UNK``.

    Args:
        captions: the texts the words are counted in (the training split's).
        min_count: the fewest occurrences of a word to get an id.
        specials: the tokens before the words (ids ``0 .. len(specials) - 1``).
        max_size: the most entries, specials included, keeping the most frequent words (``None``: no limit).
        tokenizer: splits a text into words (:func:`tokenize` by default).

    >>> build_vocab(["a dog", "a cat", "the dog"], min_count=2)
    ['<pad>', '<bos>', '<eos>', '<unk>', 'a', 'dog']
    >>> build_vocab(["a dog", "a cat", "the dog"], specials=("<pad>", "<unk>"), max_size=3)
    ['<pad>', '<unk>', 'a']
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if max_size is not None and (
        isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= len(specials)
    ):
        raise ValueError(f"max_size must be an integer above the {len(specials)} specials (or None), got {max_size!r}")
    counts = Counter(word for caption in captions for word in tokenizer(caption))
    words = sorted((word for word, count in counts.items() if count >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
        words = words[: max_size - len(specials)]
    return [*specials, *words]


def _word_ids(vocab: Sequence[str] | Mapping[str, int]) -> Mapping[str, int]:
    return vocab if isinstance(vocab, Mapping) else {word: index for index, word in enumerate(vocab)}


def encode_caption(text: str, vocab: Sequence[str] | Mapping[str, int], max_length: int) -> torch.Tensor:
    """The ids of ``text``'s first ``max_length`` words (``UNK`` for words not in ``vocab``), then ``EOS``.

    Args:
        text: the caption.
        vocab: the words in id order (a list), or a word -> id mapping (faster when encoding many captions).
        max_length: the most words kept.

    >>> encode_caption("A dog runs fast.", ["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog"], max_length=3)
    tensor([4, 5, 3, 2])
    """
    if max_length < 0:
        raise ValueError(f"max_length must be >= 0, got {max_length}")
    ids = _word_ids(vocab)
    words = tokenize(text)[:max_length]
    return torch.tensor([ids.get(word, UNK) for word in words] + [EOS], dtype=torch.long)


def decode_caption(ids: torch.Tensor | Iterable[int], vocab: Sequence[str] | Mapping[str, int]) -> str:
    """The words of ``ids`` up to the first ``EOS``, joined by spaces; ``PAD`` and ``BOS`` are skipped and ``UNK``
    shows as ``<unk>``.

    >>> decode_caption([1, 4, 3, 5, 2, 5, 0], ["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog"])
    'a <unk> dog'
    """
    words = list(vocab) if not isinstance(vocab, Mapping) else [w for w, _ in sorted(vocab.items(), key=lambda p: p[1])]
    values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    out = []
    for index in values:
        index = int(index)
        if index == EOS:
            break
        if index in (PAD, BOS):
            continue
        if not 0 <= index < len(words):
            raise ValueError(f"id {index} is not in the vocabulary of {len(words)} words")
        out.append(SPECIALS[UNK] if index == UNK else words[index])
    return " ".join(out)


# --- samples and batches ----------------------------------------------------------------------------------------------
class CaptionBatch(NamedTuple):
    """``images`` float ``(B, C, H, W)`` normalized; ``captions`` ``(B, T)``: one caption's ids (words, ``EOS``)
    padded with ``PAD``; ``references`` ``(B, R, T2)``: every caption of each image, missing rows all ``PAD``."""

    images: torch.Tensor
    captions: torch.Tensor
    references: torch.Tensor


def collate_captions(samples: Sequence[tuple[torch.Tensor, torch.Tensor, Sequence[torch.Tensor]]]) -> CaptionBatch:
    """Stack images and pad captions and references with ``PAD``; a sample is ``(image, caption_ids, references)``."""
    images, captions, references = zip(*samples, strict=True)
    rows = max(len(refs) for refs in references)
    width = max(len(ref) for refs in references for ref in refs)
    padded = torch.full((len(samples), rows, width), PAD, dtype=torch.long)  # (B, R, T2)
    for b, refs in enumerate(references):
        for r, ref in enumerate(refs):
            padded[b, r, : len(ref)] = ref
    return CaptionBatch(torch.stack(images), pad_sequence(list(captions), batch_first=True, padding_value=PAD), padded)


class CaptionDataset(Dataset):
    """Images with their encoded captions: one sample per (image, caption) pair when ``train``, else one per image
    (its first caption). A sample is ``(image, caption_ids, all_caption_ids_of_the_image)``.

    Args:
        images: uint8 ``(C, H, W)`` images by index (a uint8 tensor ``(N, C, H, W)``, or images read on access).
        captions: the id tensors of each image's captions (at least one each).
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation.
        train: one sample per caption (training) or per image (evaluation).
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        captions: Sequence[Sequence[torch.Tensor]],
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
    ) -> None:
        if len(images) != len(captions):
            raise ValueError(f"{len(images)} images but captions for {len(captions)}")
        if any(len(caps) == 0 for caps in captions):
            raise ValueError("every image needs at least one caption")
        self.images, self.captions, self.train = images, [list(caps) for caps in captions], train
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        counts = [len(caps) for caps in self.captions] if train else [1] * len(self.captions)
        self.pairs = [(image, caption) for image, count in enumerate(counts) for caption in range(count)]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        image, caption = self.pairs[index]
        pixels = (self.images[image].float() / 255 - self.mean) / self.std
        return pixels, self.captions[image][caption], self.captions[image]


class _ImageFiles:
    """uint8 ``(C, H, W)`` images decoded from ``paths`` on access and resized to ``size`` (picklable for workers)."""

    def __init__(self, paths: Sequence[str], channels: int, size: tuple[int, int]) -> None:
        self.paths, self.channels, self.size = list(paths), channels, list(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = decode_image(self.paths[index], channels=self.channels)
        return resize(image, self.size, antialias=True)


def split_by_image(
    images: Sequence[Hashable], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Hashable], list[Hashable], list[Hashable]]:
    """The distinct ``images`` (names or ids; repeats, e.g. one per caption, count once) in three disjoint lists:
    train, val and test, drawn by ``seed``, each in the order of first appearance. A non-zero fraction gets at least
    one image.

    >>> split_by_image(["a", "a", "b", "c", "d", "e"], 0.2, 0.2, seed=0)
    (['b', 'c', 'd'], ['e'], ['a'])
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"need val_fraction and test_fraction in [0, 1) with a sum below 1, got {val_fraction} and {test_fraction}"
        )
    distinct = list(dict.fromkeys(images))
    n = len(distinct)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} images cannot be split into {n_val} for validation, {n_test} for test and some to train")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    val, test = sorted(order[:n_val]), sorted(order[n_val : n_val + n_test])
    train = sorted(order[n_val + n_test :])
    return [distinct[i] for i in train], [distinct[i] for i in val], [distinct[i] for i in test]


# --- the base datamodule ----------------------------------------------------------------------------------------------
class _Split(NamedTuple):
    images: Sequence[torch.Tensor]  # uint8 (C, H, W) by index
    captions: list[list[str]]  # the caption texts of each image


class CaptionDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Base of the captioning datamodules: splits by image, the training vocabulary, loaders of
    :class:`CaptionBatch`.

    A subclass sets ``in_channels``, ``img_size``, ``mean`` and ``std`` and implements :meth:`read_splits`. The
    attributes the model is linked from (``vocab``, ``vocab_size``, ``max_length`` and those four) can be read right
    after construction: the first read of ``vocab`` or ``max_length`` reads the captions (not the images), once.

    Args:
        batch_size: samples per batch.
        min_count: the fewest times a training word occurs to get its own id (rarer ones read as ``UNK``).
        max_length: the most words a caption keeps (longer ones are truncated before ``EOS``).
        val_fraction: fraction of the images held out for validation (by image, where the format has no split).
        test_fraction: fraction of the images held out for testing.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
        seed: seed of the splits.

    Attributes:
        vocab: :data:`SPECIALS`, then the training split's words of at least ``min_count`` occurrences.
        vocab_size: ``len(vocab)``.
        max_length: the most words of an encoded caption: the longest training caption, at most the ``max_length``
            argument. Captions of every split are truncated to it, so each has at most ``max_length + 1`` ids.
    """

    in_channels: int
    img_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __init__(
        self,
        batch_size: int = 32,
        min_count: int = 1,
        max_length: int = 20,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, val_fraction, test_fraction)
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive integer, got {max_length!r}")
        # Kept for checkpoints, not merged into the logged hparams (the model has its own max_length and img_size).
        self.save_hyperparameters(logger=False)
        self.batch_size = batch_size
        self._splits: dict[str, _Split] | None = None
        self._vocab: list[str] = []
        self._max_words = 0
        self.datasets: dict[str, CaptionDataset] = {}

    def read_splits(self) -> dict[str, tuple[Sequence[torch.Tensor], list[list[str]]]]:
        """The images (uint8 ``(C, H, W)`` by index, ``img_size``) and caption texts of each image of ``train``,
        ``val`` and ``test`` (a split may be left out, or have no images)."""
        raise NotImplementedError

    def _read(self) -> dict[str, _Split]:
        if self._splits is None:
            splits = {
                name: _Split(images, [list(c) for c in caps]) for name, (images, caps) in self.read_splits().items()
            }
            train = [caption for captions in splits["train"].captions for caption in captions]
            self._vocab = build_vocab(train, self.hparams.min_count)
            longest = max(len(tokenize(caption)) for caption in train)
            self._max_words = max(1, min(self.hparams.max_length, longest))
            self._splits = splits
        return self._splits

    @property
    def vocab(self) -> list[str]:
        """The words in id order (see the class docstring)."""
        self._read()
        return self._vocab

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocab)

    @property
    def max_length(self) -> int:
        """The most words of an encoded caption (see the class docstring)."""
        self._read()
        return self._max_words

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Images of ``in_channels`` at ``img_size`` normalized with ``mean`` and ``std``; captions in ``vocab``."""
        return {
            "input": "image",
            "in_channels": int(self.in_channels),
            "img_size": [int(size) for size in self.img_size],
            "mean": [float(value) for value in self.mean],
            "std": [float(value) for value in self.std],
            "classes": None,
            "vocab": [str(word) for word in self.vocab],
            "max_length": int(self.max_length),
        }

    def prepare_data(self) -> None:
        self._read()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits, ids = self._read(), _word_ids(self.vocab)
        for name, split in splits.items():
            if name != "train" and not len(split.images):
                continue
            captions = [[encode_caption(text, ids, self.max_length) for text in texts] for texts in split.captions]
            self.datasets[name] = CaptionDataset(split.images, captions, self.mean, self.std, train=name == "train")

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            reason = "setup() was not called; the Trainer calls it" if not self.datasets else "it holds no images"
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split ({reason})")
        hp = self.hparams
        return make_loader(
            self.datasets[split], self.batch_size, shuffle, hp.num_workers, hp.pin_memory, collate_captions
        )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if min(height, width) < 1:
        raise ValueError(f"img_size must be positive, got {size}")
    return int(height), int(width)


def _missing_images(named: Mapping[str, str], images_dir: str, where: str, skip: bool) -> list[str]:
    """The image names of ``named`` (name -> where it was named) whose file is absent from ``images_dir``; an error
    naming the first unless ``skip``."""
    missing = [name for name in named if not os.path.isfile(os.path.join(images_dir, name))]
    if missing and not skip:
        first = missing[0]
        others = f" (and {len(missing) - 1} more image(s) named there)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"{where}, {named[first]}: image {first!r} not found in {os.path.abspath(images_dir)}/{others}. Put it "
            "there, or pass skip_missing_images=True to drop the captions of absent images."
        )
    return missing


# --- Flickr8k / Flickr30k ---------------------------------------------------------------------------------------------
def _read_flickr(path: str) -> list[tuple[int, str, str]]:
    """``(line, image file, caption)`` of every caption of a Kaggle ``captions.txt`` or a ``Flickr8k.token.txt``."""
    where = os.path.abspath(path)
    try:
        with open(path, encoding="utf-8", newline="") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{where} is not UTF-8 text (byte {error.start}); save it as UTF-8") from error
    if not text.strip():
        raise ValueError(
            f"{where}, line 1: the file is empty; it needs a header line `image,caption`, then one "
            "`<image file>,<caption>` line per caption"
        )
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    first = next(line for line in lines if line.strip())
    rows: list[tuple[int, str, str]] = []
    if path.endswith(".token.txt") or "\t" in first:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            name, tab, caption = line.partition("\t")
            if not tab or not caption.strip():
                raise ValueError(
                    f"{where}, line {number}: no caption after {name.strip()!r}; each line is "
                    "`<image file>#<n><TAB><caption>`"
                )
            rows.append((number, name.strip().rsplit("#", 1)[0], caption.strip()))
        return rows
    reader = csv.reader(io.StringIO(text, newline=""))  # line_num counts the lines of quoted multi-line fields too
    header = None
    for row in reader:
        number = reader.line_num
        if not row or not "".join(row).strip():
            continue
        if header is None and not rows and row[0].strip().lower() == "image":
            header = number
            continue
        caption = ",".join(row[1:]).strip()  # unquoted commas inside a caption split it into more fields
        if not row[0].strip():
            raise ValueError(f"{where}, line {number}: no image file name before the caption {caption!r}")
        if not caption:
            raise ValueError(
                f"{where}, line {number}: no caption after {row[0].strip()!r}; each line is `<image file>,<caption>`"
            )
        rows.append((number, row[0].strip(), caption))
    if not rows:
        raise ValueError(
            f"{where}, line {header}: a header and no captions; add one `<image file>,<caption>` line per caption"
        )
    return rows


class _CaptionFilesDataModule(CaptionDataModule):
    """Captions read from a file and images from a folder, both under ``data_dir``; split by image by fractions.

    A subclass implements :meth:`read_captions` and :meth:`_layout` (what to put where, for error messages).
    """

    in_channels = 3

    def __init__(
        self,
        data_dir: str,
        captions_file: str,
        images_dir: str,
        img_size: int | tuple[int, int] = 224,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        skip_missing_images: bool = False,
        batch_size: int = 32,
        min_count: int = 1,
        max_length: int = 20,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size, min_count, max_length, val_fraction, test_fraction, num_workers, pin_memory, seed)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        self.data_dir = os.path.expanduser(data_dir)
        self.captions_path = os.path.join(self.data_dir, captions_file)
        self.images_path = os.path.join(self.data_dir, images_dir)
        self.img_size, self.mean, self.std = _pair(img_size), tuple(mean), tuple(std)
        self.skip_missing_images = skip_missing_images

    def _layout(self) -> str:
        raise NotImplementedError

    def read_captions(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The captions of each image file (in the file's order) and where each image is first named (for errors)."""
        raise NotImplementedError

    def read_splits(self) -> dict[str, tuple[Sequence[torch.Tensor], list[list[str]]]]:
        where = os.path.abspath(self.captions_path)
        if not os.path.isfile(self.captions_path):
            raise FileNotFoundError(f"No captions file at {where}. {self._layout()}.")
        if not os.path.isdir(self.images_path):
            raise FileNotFoundError(f"No images folder at {os.path.abspath(self.images_path)}/. {self._layout()}.")
        captions, named = self.read_captions()
        for image in _missing_images(named, self.images_path, where, self.skip_missing_images):
            del captions[image]
        if not captions:
            raise FileNotFoundError(f"None of the images named in {where} is in {os.path.abspath(self.images_path)}/")
        hp = self.hparams
        parts = split_by_image(list(captions), hp.val_fraction, hp.test_fraction, hp.seed)
        return {
            name: (
                _ImageFiles([os.path.join(self.images_path, image) for image in images], 3, self.img_size),
                [captions[image] for image in images],
            )
            for name, images in zip(SPLITS, parts, strict=True)
        }


class FlickrCaptionsDataModule(_CaptionFilesDataModule):
    """Flickr8k/Flickr30k captions: ``data_dir/captions.txt`` (or ``Flickr8k.token.txt``) and ``data_dir/Images/``.

    ``captions.txt`` is Kaggle's form: a header line ``image,caption``, then one ``<image file>,<caption>`` line per
    caption (five per image; captions may hold commas and quotes). The original ``Flickr8k.token.txt``
    (``<image file>#<n><TAB><caption>``) is read when the file name ends in ``.token.txt`` or its lines hold tabs.
    The images are split into train/val/test by ``val_fraction`` and ``test_fraction``; each is decoded when a batch
    needs it, as RGB, resized to ``img_size`` (antialiased, the aspect ratio not kept) and normalized. Every named
    image is checked to exist when the captions are read, before training. No augmentation: a flip would falsify
    "left" and "right" in the captions.

    Args:
        data_dir: the dataset's folder.
        captions_file: the captions file, relative to ``data_dir``.
        images_dir: the images' folder, relative to ``data_dir``.
        img_size: size images are resized to (an int for square).
        mean: per-channel normalization mean (ImageNet's by default, right for pretrained backbones).
        std: per-channel normalization std.
        skip_missing_images: drop the captions of images absent from ``images_dir`` instead of failing (the
            original ``Flickr8k.token.txt`` names an image, ``2258277193_586949ec62.jpg.1``, that is not shipped).
        batch_size: samples per batch.
        min_count: the fewest occurrences of a training word to get its own id.
        max_length: the most words a caption keeps.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for testing.
        num_workers: loader worker processes (images are decoded per sample: use some for speed).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
    """

    def __init__(
        self,
        data_dir: str = "data/flickr8k",
        captions_file: str = "captions.txt",
        images_dir: str = "Images",
        **kwargs: Any,
    ) -> None:
        # the other arguments are the base's (jsonargparse and LightningCLI follow **kwargs to its signature)
        super().__init__(data_dir, captions_file, images_dir, **kwargs)

    def _layout(self) -> str:
        return (
            f"Put the Flickr8k layout in {os.path.abspath(self.data_dir)}/: {os.path.basename(self.captions_path)} "
            "(Kaggle's captions.txt: a header line `image,caption`, then one `<image file>,<caption>` line per "
            "caption; or Flickr8k.token.txt with captions_file=Flickr8k.token.txt) and the images in "
            f"{os.path.abspath(self.images_path)}/"
        )

    def read_captions(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        captions: dict[str, list[str]] = {}
        named: dict[str, str] = {}
        for line, image, caption in _read_flickr(self.captions_path):
            captions.setdefault(image, []).append(caption)
            named.setdefault(image, f"line {line}")
        return captions, named


# --- COCO -------------------------------------------------------------------------------------------------------------
class COCOCaptionsDataModule(_CaptionFilesDataModule):
    """COCO captions: ``data_dir/annotations/captions_train2017.json`` and ``data_dir/train2017/``, split by image.

    The JSON holds ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``, ``caption``). An image's
    captions keep the file's order; the first is the one evaluated as ``captions``. Images without captions are left
    out. Images are read and normalized as in :class:`FlickrCaptionsDataModule`.

    Args:
        data_dir: the dataset's folder.
        annotations_file: the captions JSON, relative to ``data_dir``.
        images_dir: the images' folder, relative to ``data_dir``.
        img_size: size images are resized to (an int for square).
        mean: per-channel normalization mean (ImageNet's by default).
        std: per-channel normalization std.
        skip_missing_images: drop the captions of images absent from ``images_dir`` instead of failing.
        batch_size: samples per batch.
        min_count: the fewest occurrences of a training word to get its own id.
        max_length: the most words a caption keeps.
        val_fraction: fraction of the images for validation.
        test_fraction: fraction of the images for testing.
        num_workers: loader worker processes (images are decoded per sample: use some for speed).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the splits.
    """

    def __init__(
        self,
        data_dir: str = "data/coco",
        annotations_file: str = "annotations/captions_train2017.json",
        images_dir: str = "train2017",
        **kwargs: Any,
    ) -> None:
        # the other arguments are the base's (jsonargparse and LightningCLI follow **kwargs to its signature)
        super().__init__(data_dir, annotations_file, images_dir, **kwargs)

    def _layout(self) -> str:
        return (
            f"Put the COCO layout in {os.path.abspath(self.data_dir)}/: the captions JSON at "
            f"{os.path.abspath(self.captions_path)} (e.g. annotations/captions_train2017.json of "
            f"annotations_trainval2017.zip) and its images in {os.path.abspath(self.images_path)}/"
        )

    def read_captions(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        where = os.path.abspath(self.captions_path)
        try:
            with open(self.captions_path, encoding="utf-8") as file:
                data = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{where} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
            ) from error
        except UnicodeDecodeError as error:
            raise ValueError(f"{where} is not UTF-8 text (byte {error.start})") from error
        for key in ("images", "annotations"):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise ValueError(f"{where} has no list {key!r}; a COCO captions file holds 'images' and 'annotations'")
        files: dict[Any, str] = {}
        for index, entry in enumerate(data["images"]):
            if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
                raise ValueError(f"{where}: images[{index}] needs an 'id' and a 'file_name', got {str(entry)[:200]}")
            files[entry["id"]] = entry["file_name"]
        captions: dict[str, list[str]] = {}
        named: dict[str, str] = {}
        for index, entry in enumerate(data["annotations"]):
            if not isinstance(entry, dict) or "image_id" not in entry or not isinstance(entry.get("caption"), str):
                raise ValueError(
                    f"{where}: annotations[{index}] needs an 'image_id' and a 'caption', got {str(entry)[:200]}"
                )
            if entry["image_id"] not in files:
                raise ValueError(
                    f"{where}: annotations[{index}] (id {entry.get('id')}) names image_id {entry['image_id']!r}, "
                    "which no entry of 'images' has"
                )
            if not entry["caption"].strip():
                raise ValueError(f"{where}: annotations[{index}] (id {entry.get('id')}) has an empty caption")
            name = files[entry["image_id"]]
            captions.setdefault(name, []).append(entry["caption"].strip())
            named.setdefault(name, f"annotations[{index}] (image_id {entry['image_id']!r})")
        if not captions:
            raise ValueError(f"{where} has no annotations; a captions file holds one per caption")
        return captions, named
