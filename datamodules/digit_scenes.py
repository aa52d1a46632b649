"""The embedded captioning set: scenes of 2-4 of scikit-learn's 8x8 handwritten digits on a 2x2 grid, captioned with
the digits' names and places (:func:`scene_captions`). No files, no network; batches as every
:class:`~datamodules.captions.CaptionDataModule` gives them.

>>> dm = DigitScenesCaptionsDataModule(num_train=20, num_val=4, num_test=4, batch_size=8)
>>> dm.setup("fit")
>>> batch = next(iter(dm.train_dataloader()))
>>> tuple(batch.images.shape), batch.captions.dtype, dm.vocab[:5]
((8, 1, 32, 32), torch.int64, ['<pad>', '<bos>', '<eos>', '<unk>', 'a'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from datamodules.captions import SPLITS, CaptionDataModule, split_by_image

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: The cells of the 2x2 grid in reading order; cell ``c`` is at row ``c // 2``, column ``c % 2``.
CELL_NAMES = ("top left", "top right", "bottom left", "bottom right")
_ROWS, _COLUMNS = ("top", "bottom"), ("left", "right")


class DigitScene(NamedTuple):
    """The digits of a scene in reading order, their cells (0-3, :data:`CELL_NAMES`) and the indices of the
    handwritten images drawn (into ``sklearn.datasets.load_digits()``)."""

    digits: tuple[int, ...]
    cells: tuple[int, ...]
    sources: tuple[int, ...]


def _noun(digit: int) -> str:
    return f"an {DIGIT_WORDS[digit]}" if digit == 8 else f"a {DIGIT_WORDS[digit]}"  # "a one", "an eight"


def scene_captions(digits: Sequence[int], cells: Sequence[int]) -> list[str]:
    """The captions of a scene of ``digits`` in distinct ``cells`` of the 2x2 grid (:data:`CELL_NAMES`), four each,
    all true of it. The phrasings depend on the layout only; the digits fill them in reading order.

    >>> scene_captions([7, 2], [0, 1])
    ['a seven left of a two', 'a two right of a seven', 'a seven and a two in the top row',
     'two digits : a seven and a two']
    >>> scene_captions([8, 7, 2], [3, 0, 1])[2:]
    ['a seven left of a two and an eight below a two', 'a seven , a two and an eight with the bottom left empty']
    """
    if len(digits) != len(cells) or not 1 <= len(cells) <= 4 or len(set(cells)) != len(cells):
        raise ValueError(f"need 1 to 4 digits in distinct cells, got digits {list(digits)} in cells {list(cells)}")
    if not all(0 <= int(c) < 4 for c in cells) or not all(0 <= int(d) < 10 for d in digits):
        raise ValueError(f"cells are 0-3 and digits 0-9, got digits {list(digits)} in cells {list(cells)}")
    by_cell = {int(cell): _noun(int(digit)) for cell, digit in zip(cells, digits, strict=True)}
    order = sorted(by_cell)
    names = [by_cell[cell] for cell in order]
    listing = names[0] if len(names) == 1 else " , ".join(names[:-1]) + " and " + names[-1]
    count = f"{DIGIT_WORDS[len(names)]} digit{'s' if len(names) > 1 else ''} : {listing}"
    if len(names) == 1:
        (x,) = names
        row, column = divmod(order[0], 2)
        return [
            f"{x} in the {CELL_NAMES[order[0]]}",
            count,
            f"{x} in the {_ROWS[row]} row",
            f"{x} in the {_COLUMNS[column]} column",
        ]
    if len(names) == 2:
        (p, q), (x, y) = order, names
        (row_p, col_p), (row_q, col_q) = divmod(p, 2), divmod(q, 2)
        if row_p == row_q:
            return [f"{x} left of {y}", f"{y} right of {x}", f"{x} and {y} in the {_ROWS[row_p]} row", count]
        if col_p == col_q:
            return [f"{x} above {y}", f"{y} below {x}", f"{x} and {y} in the {_COLUMNS[col_p]} column", count]
        side, other = ("left", "right") if col_p < col_q else ("right", "left")
        return [
            f"{x} above and {side} of {y}",
            f"{y} below and {other} of {x}",
            f"{x} in the {CELL_NAMES[p]} and {y} in the {CELL_NAMES[q]}",
            count,
        ]
    if len(names) == 3:
        (empty,) = set(range(4)) - set(order)
        full = 1 - empty // 2  # the row with both cells taken
        lone = empty ^ 1  # the other cell of the empty cell's row
        neighbour = by_cell[2 * full + lone % 2]  # the full row's digit in the lone digit's column
        relation = "below" if full == 0 else "above"
        pair = f"{by_cell[2 * full]} left of {by_cell[2 * full + 1]}"
        return [
            listing,
            count,
            f"{pair} and {by_cell[lone]} {relation} {neighbour}",
            f"{listing} with the {CELL_NAMES[empty]} empty",
        ]
    x, y, z, w = names
    return [listing, count, f"{x} left of {y} and {z} left of {w}", f"{x} above {z} and {y} above {w}"]


def _glyphs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 ``(N, size, size)`` images (0-16 grey levels scaled to 0-255) and labels."""
    from sklearn.datasets import load_digits  # here: importing scikit-learn costs every program 0.5 s

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul(255 / 16).unsqueeze(1)  # (N, 1, 8, 8)
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=size < 8)
    return images.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy(), digits.target.astype(np.int64)


def compose_scenes(
    count: int,
    glyphs: np.ndarray,
    labels: np.ndarray,
    pool: Sequence[int],
    min_digits: int,
    max_digits: int,
    canvas: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, list[DigitScene]]:
    """``count`` scenes of ``min_digits`` to ``max_digits`` handwritten digits from ``pool`` in distinct random cells
    of a 2x2 grid on a black ``canvas x canvas`` image, each digit at a random offset inside its cell.

    The number of digits, their cells (any subset of that size), identities (0-9, each equally likely) and images
    (any of ``pool`` of that label) are drawn independently.

    Args:
        count: scenes to compose.
        glyphs: uint8 digit images ``(N, S, S)``, ``S`` at most ``canvas // 2``.
        labels: the digit of each glyph ``(N,)``.
        pool: the indices of the glyphs to draw from (every digit at least once).
        min_digits: the fewest digits of a scene (1-4).
        max_digits: the most digits of a scene (1-4).
        canvas: the image's side in pixels.
        rng: the random source.

    Returns:
        uint8 images ``(count, 1, canvas, canvas)`` and each scene's :class:`DigitScene`.
    """
    pool = np.asarray(pool)
    size, cell = glyphs.shape[-1], canvas // 2
    by_label = pool[np.argsort(labels[pool], kind="stable")]
    per_label = np.bincount(labels[pool], minlength=10)
    starts = np.concatenate([[0], np.cumsum(per_label)[:-1]])
    k = rng.integers(min_digits, max_digits + 1, count)
    occupied = rng.random((count, 4)).argsort(axis=1).argsort(axis=1) < k[:, None]  # a random k of the 4 cells
    digits = rng.integers(0, 10, (count, 4))
    chosen = by_label[starts[digits] + (rng.random((count, 4)) * per_label[digits]).astype(np.int64)]  # (count, 4)
    offsets = rng.integers(0, cell - size + 1, (count, 4, 2))
    images = np.zeros((count, canvas, canvas), dtype=np.uint8)
    steps = np.arange(size)
    for c in range(4):
        scenes = np.nonzero(occupied[:, c])[0]
        rows = (c // 2) * cell + offsets[scenes, c, 0, None] + steps  # (M, size)
        cols = (c % 2) * cell + offsets[scenes, c, 1, None] + steps
        images[scenes[:, None, None], rows[:, :, None], cols[:, None, :]] = glyphs[chosen[scenes, c]]
    scene_list = []
    for digit_row, chosen_row, taken in zip(digits.tolist(), chosen.tolist(), occupied.tolist(), strict=True):
        cells = tuple(c for c in range(4) if taken[c])
        scene_list.append(DigitScene(tuple(digit_row[c] for c in cells), cells, tuple(chosen_row[c] for c in cells)))
    return torch.from_numpy(images).unsqueeze(1), scene_list


class DigitScenesCaptionsDataModule(CaptionDataModule):
    """Generated scenes of 2-4 handwritten digits on a 2x2 grid, each with four captions of what is where.

    The 1,797 8x8 digits of scikit-learn are first split by ``seed`` into disjoint pools of handwriting
    (``test_fraction`` and ``val_fraction`` of them for the test and validation scenes), so test scenes show unseen
    writers' digits. A scene puts ``min_digits`` to ``max_digits`` digits, upscaled to ``canvas // 2 - 4`` pixels, in
    distinct cells of a 2x2 grid on a black ``canvas x canvas`` image, each at a random offset inside its cell.
    Identities and cells are uniform and independent, so a captioner that ignores the image cannot do better than
    chance on them. Captions (:func:`scene_captions`) name the digits (``zero``-``nine``) and their places: ``"a
    seven left of a two"``, ``"a two right of a seven"``, ``"a seven and a two in the top row"``, ``"two digits : a
    seven and a two"``. The vocabulary has 27 words besides the specials; a caption at most 13 words.

    Deterministic for a ``seed`` (each split its own stream). ``mean`` and ``std`` are computed from the training
    images (rounded to 4 decimals). The scenes are in :attr:`scenes` (``DigitScene(digits, cells, sources)`` by split,
    in the order of the datasets' images).

    Args:
        num_train: training scenes (one sample per caption: four per scene).
        num_val: validation scenes.
        num_test: test scenes.
        min_digits: the fewest digits of a scene (1-4).
        max_digits: the most digits of a scene (1-4).
        canvas: the image's side in pixels (at least 16).
        batch_size: samples per batch.
        min_count: the fewest occurrences of a training word to get its own id.
        max_length: the most words a caption keeps.
        val_fraction: fraction of the handwritten digits kept for the validation scenes.
        test_fraction: fraction of the handwritten digits kept for the test scenes.
        num_workers: loader worker processes (in-memory images need none).
        pin_memory: pin host memory (``None``: when CUDA is available).
        seed: seed of the pools and the scenes.
    """

    in_channels = 1

    def __init__(
        self,
        num_train: int = 8000,
        num_val: int = 500,
        num_test: int = 1000,
        min_digits: int = 2,
        max_digits: int = 4,
        canvas: int = 32,
        batch_size: int = 32,
        min_count: int = 1,
        max_length: int = 20,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__(batch_size, min_count, max_length, val_fraction, test_fraction, num_workers, pin_memory, seed)
        if min(num_train, num_val, num_test) < 1:
            raise ValueError(f"need at least one scene per split, got {num_train}, {num_val}, {num_test}")
        if not 1 <= min_digits <= max_digits <= 4:
            raise ValueError(f"need 1 <= min_digits <= max_digits <= 4, got {min_digits} and {max_digits}")
        if canvas < 16:
            raise ValueError(f"canvas must be at least 16 pixels (digits of canvas // 2 - 4), got {canvas}")
        if val_fraction <= 0 or test_fraction <= 0:
            raise ValueError(
                f"the val and test scenes need digits of their own: need val_fraction and test_fraction > 0, got "
                f"{val_fraction} and {test_fraction}"
            )
        self.img_size = (canvas, canvas)
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self._scenes: dict[str, list[DigitScene]] = {}
        self._stats: tuple[tuple[float], tuple[float]] | None = None

    @property
    def scenes(self) -> dict[str, list[DigitScene]]:
        """Each split's scenes, in the order of its images."""
        self._read()
        return self._scenes

    @property
    def mean(self) -> tuple[float]:  # type: ignore[override]
        """Mean pixel of the training images in [0, 1] units."""
        self._read()
        return self._stats[0]

    @property
    def std(self) -> tuple[float]:  # type: ignore[override]
        """Standard deviation of the training images' pixels in [0, 1] units."""
        self._read()
        return self._stats[1]

    def read_splits(self) -> dict[str, tuple[Sequence[torch.Tensor], list[list[str]]]]:
        hp = self.hparams
        glyphs, labels = _glyphs(hp.canvas // 2 - 4)
        pools = split_by_image(range(len(labels)), hp.val_fraction, hp.test_fraction, hp.seed)
        splits = {}
        for index, (name, pool) in enumerate(zip(SPLITS, pools, strict=True)):
            absent = sorted(set(range(10)) - set(labels[pool].tolist()))
            if absent:
                raise ValueError(f"the {name} pool of handwritten digits has no {absent}; raise its fraction")
            rng = np.random.default_rng([hp.seed, index])
            images, scenes = compose_scenes(
                self.counts[name], glyphs, labels, pool, hp.min_digits, hp.max_digits, hp.canvas, rng
            )
            self._scenes[name] = scenes
            splits[name] = (images, [scene_captions(scene.digits, scene.cells) for scene in scenes])
        pixels = splits["train"][0].float().div(255)
        self._stats = ((round(float(pixels.mean()), 4),), (round(float(pixels.std()), 4),))
        return splits
