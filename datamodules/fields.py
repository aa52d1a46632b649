"""Clean 2-d fields that look like scientific data, generated on the fly: the clean images of image denoising.

Three generators, each a function of a size, one physical parameter and a ``torch.Generator``, returning a float32
``(1, H, W)`` image in [0, 1]:

- :func:`gaussian_random_field`: white noise filtered in Fourier space to the power spectrum ``|k|^-exponent``
  (cosmological maps, turbulence, terrain); a larger exponent is smoother.
- :func:`heat_snapshot`: hot and cold spots on a rough background, evolved exactly by the heat equation on the
  periodic unit square (:func:`heat_initial_condition`, :func:`evolve_heat`); a later time is smoother.
- :func:`microscopy_blobs`: Gaussian spots of random radii and brightness over a dim background (fluorescent cells
  or nuclei) (:func:`draw_blobs`, :func:`render_blobs`); a larger count is denser.

:class:`ScientificFieldsDataModule` cycles through the kinds, draws each image's parameter from a range
(:func:`draw_field`) and makes sample ``index`` of a split a pure function of ``(seed, split, index)``
(:func:`sample_seed`), so it is the same whatever the worker count, epoch or datamodule instance. Batches are
``(images, labels)``: images ``(B, 1, H, W)`` in [0, 1] (``mean`` 0 and ``std`` 1, so the denoising task reads them
as they are) and the kind's index as label. Nothing is read from files.

>>> image = gaussian_random_field(32, 3.0, torch.Generator().manual_seed(0))
>>> tuple(image.shape), image.dtype, float(image.min()), float(image.max())
((1, 32, 32), torch.float32, 0.0, 1.0)
>>> dm = ScientificFieldsDataModule(img_size=16, train_size=6, val_size=3, test_size=3, batch_size=3)
>>> dm.setup("fit")
>>> images, labels = next(iter(dm.val_dataloader()))
>>> tuple(images.shape), labels.tolist(), dm.class_names
((3, 1, 16, 16), [0, 1, 2], ['gaussian_field', 'heat', 'blobs'])
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.base import SavesPreprocessing, SplitLoaders, check_batch_and_split, collate_batched, make_loader

Tensor = torch.Tensor
#: The kinds of field, in the default order of the datamodule's classes.
FIELD_KINDS = ("gaussian_field", "heat", "blobs")
SPLITS = ("train", "val", "test")
_MASK32, _MASK64 = 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF


# --- helpers ---------------------------------------------------------------------------------------------------------
def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an integer of at least 2 pixels, got {size!r}")


def _rescale(field: Tensor) -> Tensor:
    """Min-max to [0, 1] per image: the minimum maps to 0, the maximum to 1 (a constant field to 0)."""
    low, high = field.amin(), field.amax()
    return ((field - low) / (high - low).clamp(min=1e-12)).clamp(0, 1)


@functools.lru_cache(maxsize=8)
def _squared_wavenumbers(size: int) -> Tensor:
    """``|k|^2`` in (cycles per image side)^2 on the ``rfft2`` grid ``(size, size // 2 + 1)``, float64; cached, read
    only."""
    ky = torch.fft.fftfreq(size, 1 / size, dtype=torch.float64).view(-1, 1)  # (H, 1) integer wavenumbers
    kx = torch.fft.rfftfreq(size, 1 / size, dtype=torch.float64).view(1, -1)  # (1, W // 2 + 1)
    return ky**2 + kx**2


def _mix64(value: int) -> int:
    """MurmurHash3's 64-bit finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB93FE53DCD53) & _MASK64
    return value ^ (value >> 33)


def _mix32(value: int) -> int:
    """MurmurHash3's 32-bit finalizer: a bijection of 32-bit integers."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK32
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK32
    return value ^ (value >> 16)


def sample_seed(seed: int, split: str, index: int) -> int:
    """The seed of sample ``index`` of ``split`` (``"train"``, ``"val"`` or ``"test"``) under the dataset ``seed``.

    torch's CPU generator keeps only the low 32 bits of a seed, so the triple is hashed to 32 bits: one-to-one in
    ``index`` within a split (no two samples of a split share a stream), scattered between neighbouring indices,
    splits and seeds.

    >>> sample_seed(0, "train", 0) != sample_seed(0, "train", 1) != sample_seed(0, "val", 0)
    True
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose from {', '.join(SPLITS)}")
    base = _mix64((seed * len(SPLITS) + SPLITS.index(split)) & _MASK64)
    return _mix32((base + index) & _MASK32)


# --- Gaussian random fields ------------------------------------------------------------------------------------------
def gaussian_random_field(size: int, exponent: float, generator: torch.Generator) -> Tensor:
    """A periodic Gaussian random field of power spectrum ``|k|^-exponent``, min-max rescaled to [0, 1].

    White noise is filtered in Fourier space by the amplitude ``|k|^(-exponent / 2)``, with the mean (``k = 0``)
    mode removed. ``exponent`` 0 is white noise; about 2 to 4 spans rough to smooth (11/3 is Kolmogorov turbulence
    in 2-d). The min-max rescaling is affine, so the spectrum's shape (all but ``k = 0``) is kept.

    Args:
        size: the side ``H = W`` in pixels.
        exponent: the power spectrum's exponent (``P(k) ~ |k|^-exponent``).
        generator: the random source.

    Returns:
        float32 ``(1, size, size)`` in [0, 1].
    """
    _check_size(size)
    if not math.isfinite(exponent):
        raise ValueError(f"exponent must be a finite number, got {exponent!r}")
    noise = torch.randn(size, size, generator=generator)
    amplitude = _squared_wavenumbers(size).pow(-exponent / 4).float()  # (H, W // 2 + 1): |k|^(-exponent / 2)
    amplitude[0, 0] = 0.0  # no mean mode (where 0 ** -exponent was inf)
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * amplitude, s=(size, size))
    return _rescale(field).unsqueeze(0)


# --- heat equation ---------------------------------------------------------------------------------------------------
def heat_initial_condition(size: int, generator: torch.Generator) -> Tensor:
    """A random initial temperature ``(size, size)`` on the periodic unit square, not rescaled.

    Three to eight hot or cold disks (0.5 to 1 above or below the background, radius 0.03 to 0.12 of the side,
    wrapping around the edges) over a rough background of uniform noise in [0, 0.5) per pixel.
    """
    _check_size(size)
    count = int(torch.randint(3, 9, (), generator=generator))
    centers = torch.rand(count, 2, 1, generator=generator)  # (n, 2: y and x, 1)
    radii = 0.03 + 0.09 * torch.rand(count, 1, 1, generator=generator)  # (n, 1, 1)
    signs = 2.0 * torch.randint(0, 2, (count, 1, 1), generator=generator) - 1
    temperatures = signs * (0.5 + 0.5 * torch.rand(count, 1, 1, generator=generator))
    background = 0.5 * torch.rand(size, size, generator=generator)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centers
    offsets = axis.view(1, 1, -1) - centers  # (n, 2, size)
    offsets = offsets - offsets.round()  # periodic: the nearest copy of each center
    squared = offsets[:, 0].unsqueeze(2) ** 2 + offsets[:, 1].unsqueeze(1) ** 2  # (n, H, W)
    return background + ((squared < radii**2) * temperatures).sum(0)


def evolve_heat(field: Tensor, time: float) -> Tensor:
    """The solution at ``time`` of the heat equation ``du/dt = laplacian(u)`` from ``field`` ``(..., H, W)``.

    Exact in Fourier space on the periodic unit square (a pixel is ``1 / W`` wide): each mode ``k`` (radians per
    unit length) decays by ``exp(-|k|^2 time)``. The mean (the ``k = 0`` mode) is conserved; a point source spreads
    into a Gaussian of variance ``2 time`` per axis.
    """
    if not (math.isfinite(time) and time >= 0):
        raise ValueError(f"time must be a finite number >= 0, got {time!r}")
    field = field if field.is_floating_point() else field.float()
    height, width = field.shape[-2:]
    if height != width:
        raise ValueError(f"evolve_heat needs a square field, got {height}x{width}")
    # (H, W // 2 + 1); |k| in radians per unit length is 2 pi times the cycles per side
    decay = torch.exp(_squared_wavenumbers(width) * (-4 * math.pi**2 * time)).to(field.dtype)
    return torch.fft.irfft2(torch.fft.rfft2(field) * decay, s=(height, width))


def heat_snapshot(size: int, time: float, generator: torch.Generator) -> Tensor:
    """A heat-equation snapshot: :func:`heat_initial_condition` evolved by :func:`evolve_heat` for ``time``,
    min-max rescaled to [0, 1].

    ``time`` is in units of the squared side: the diffusion length ``sqrt(2 time)`` is the blur's width as a fraction
    of the image (``2e-4`` is about a pixel at 64x64, ``4e-3`` about six).

    Returns:
        float32 ``(1, size, size)`` in [0, 1].
    """
    return _rescale(evolve_heat(heat_initial_condition(size, generator), time)).unsqueeze(0)


# --- microscopy blobs ------------------------------------------------------------------------------------------------
class Blobs(NamedTuple):
    """Gaussian spots on a constant background, in units of the image side (the image is the unit square)."""

    #: ``(n, 2)`` centers ``(y, x)`` in [0, 1).
    centers: Tensor
    #: ``(n,)`` standard deviations of the Gaussians.
    sigmas: Tensor
    #: ``(n,)`` peak brightness of each spot above the background.
    brightness: Tensor
    #: the background level.
    background: float


def draw_blobs(count: int, generator: torch.Generator) -> Blobs:
    """``count`` spots uniform over the image, of sigma 0.015 to 0.045 of the side and brightness 0.3 to 1, over a
    background of 0.02 to 0.15."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    centers = torch.rand(count, 2, generator=generator)
    sigmas = 0.015 + 0.03 * torch.rand(count, generator=generator)
    brightness = 0.3 + 0.7 * torch.rand(count, generator=generator)
    background = 0.02 + 0.13 * float(torch.rand((), generator=generator))
    return Blobs(centers, sigmas, brightness, background)


def render_blobs(size: int, blobs: Blobs) -> Tensor:
    """The image of ``blobs``: the background plus the spots' Gaussians, clipped at 1 where spots pile up (a
    saturated detector): a fixed mapping, not rescaled per image.

    Returns:
        float32 ``(1, size, size)`` in [0, 1].
    """
    _check_size(size)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centers
    width = 2 * blobs.sigmas.float().view(-1, 1, 1) ** 2  # (n, 1, 1)
    profiles = torch.exp(-((axis.view(1, 1, -1) - blobs.centers.float().unsqueeze(2)) ** 2) / width)  # (n, 2, size)
    # A 2-d Gaussian is the product of its y and x profiles: the sum over spots is one matrix product.
    spots = (profiles[:, 0] * blobs.brightness.float().view(-1, 1)).T @ profiles[:, 1]  # (H, n) @ (n, W)
    return (blobs.background + spots).clamp(0, 1).unsqueeze(0)


def microscopy_blobs(size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` Gaussian spots (cells, nuclei) of random position, radius and brightness over a dim background:
    :func:`render_blobs` of :func:`draw_blobs` (clipped at 1, not rescaled per image).

    Returns:
        float32 ``(1, size, size)`` in [0, 1].
    """
    _check_size(size)
    return render_blobs(size, draw_blobs(count, generator))


# --- drawing one sample ----------------------------------------------------------------------------------------------
def draw_field(
    kind: str,
    size: int,
    generator: torch.Generator,
    exponent_range: tuple[float, float] = (2.0, 4.0),
    time_range: tuple[float, float] = (2e-4, 4e-3),
    count_range: tuple[int, int] = (5, 50),
) -> Tensor:
    """One field of ``kind`` (:data:`FIELD_KINDS`) with its parameter drawn from ``generator``, then its image.

    The exponent is uniform in ``exponent_range``; the time makes the diffusion length ``sqrt(2 time)`` uniform
    between those of ``time_range``'s ends (so smoothness, not time, is spread evenly); the count is a uniform
    integer in ``count_range`` (both ends included).

    Returns:
        float32 ``(1, size, size)`` in [0, 1].
    """
    u = float(torch.rand((), generator=generator))
    if kind == "gaussian_field":
        low, high = exponent_range
        return gaussian_random_field(size, low + (high - low) * u, generator)
    if kind == "heat":
        low, high = (math.sqrt(end) for end in time_range)
        return heat_snapshot(size, (low + (high - low) * u) ** 2, generator)
    if kind == "blobs":
        low, high = count_range
        return microscopy_blobs(size, min(high, low + int(u * (high - low + 1))), generator)
    raise ValueError(f"Unknown field kind {kind!r}; choose from {', '.join(FIELD_KINDS)}")


# --- dataset and datamodule ------------------------------------------------------------------------------------------
class FieldDataset(Dataset):
    """``length`` fields of one split, sample ``index`` generated from :func:`sample_seed` of ``(seed, split,
    index)`` with kind ``kinds[index % len(kinds)]`` and that kind's index as label.

    With ``augment``, each image is flipped and rotated by a multiple of 90 degrees (one of the square's eight
    symmetries, uniformly), drawn from torch's global generator as the other datamodules' augmentations are.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        size: int,
        length: int,
        seed: int,
        split: str,
        augment: bool = False,
        ranges: dict[str, Any] | None = None,
    ) -> None:
        self.kinds, self.size, self.length, self.seed, self.split = list(kinds), size, length, seed, split
        self.augment, self.ranges = augment, dict(ranges or {})

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        images, labels = [], []
        with _one_thread():
            for index in indices:
                index = int(index)
                if not 0 <= index < self.length:
                    raise IndexError(f"index {index} out of range for a {self.split} split of {self.length} fields")
                generator = torch.Generator().manual_seed(sample_seed(self.seed, self.split, index))
                label = index % len(self.kinds)
                images.append(draw_field(self.kinds[label], self.size, generator, **self.ranges))
                labels.append(label)
        batch = torch.stack(images)  # (B, 1, H, W)
        if self.augment:
            batch = _dihedral(batch, torch.randint(0, 8, (len(batch),)))
        return batch, torch.tensor(labels)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the enclosed tensor ops on one thread, then restore the thread count.

    torch splits even a 16x16 FFT over all its threads, and for images this small the threads' synchronization costs
    far more than the work (a hundred times more on a busy 2-core machine). Loader workers run on one thread anyway;
    this makes loading in the main process (``num_workers=0``) as fast.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dihedral(images: Tensor, symmetries: Tensor) -> Tensor:
    """Each square image ``(B, C, H, W)`` rotated by ``symmetry % 4`` quarter turns, then flipped left-right when
    ``symmetry >= 4``: the eight symmetries of the square."""
    out = []
    for image, symmetry in zip(images, symmetries.tolist(), strict=True):
        image = torch.rot90(image, symmetry % 4, dims=(-2, -1))
        out.append(image.flip(-1) if symmetry >= 4 else image)
    return torch.stack(out)


def _check_range(name: str, value: Sequence[Any], low: float, integer: bool = False) -> tuple[Any, Any]:
    kind = "integers" if integer else "numbers"
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair of {kind} >= {low}, got {value!r}")
    start, end = value
    numeric = all(not isinstance(v, bool) and isinstance(v, int if integer else (int, float)) for v in value)
    if not numeric or not (math.isfinite(start) and math.isfinite(end) and low <= start <= end):
        raise ValueError(f"{name} must be a (low, high) pair of {kind} with {low} <= low <= high, got {value!r}")
    return (int(start), int(end)) if integer else (float(start), float(end))


class ScientificFieldsDataModule(SavesPreprocessing, SplitLoaders, L.LightningDataModule):
    """Generated 2-d scientific fields (Gaussian random fields, heat-equation snapshots, microscopy blobs) in [0, 1].

    The clean images of image denoising (``zoo.tasks.Denoiser`` adds the noise). Sample ``index`` of a split is a
    pure function of ``(seed, split, index)``; samples cycle through ``kinds`` and the label is the kind's index.
    Each image's parameter is drawn from its range (:func:`draw_field`). Training images are flipped and rotated by
    quarter turns when ``augment``; validation and test images never are.

    Args:
        kinds: the kinds of field, a subset of :data:`FIELD_KINDS` in any order (the classes).
        img_size: the images' side in pixels (square, so rotations keep the shape).
        train_size: training images.
        val_size: validation images.
        test_size: test images (also predicted).
        exponent_range: range of a Gaussian random field's spectral exponent.
        time_range: range of a heat snapshot's time (units of the squared side).
        count_range: range of a blob image's count of spots.
        seed: seed of the images; the same seed gives the same images everywhere.
        augment: random flips and quarter turns of training images.
        batch_size: images per batch.
        num_workers: loader worker processes (generation is fast: 0 is usually best).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    in_channels = 1
    #: The images are in [0, 1] as they are: nothing to normalize.
    mean = (0.0,)
    std = (1.0,)

    def __init__(
        self,
        kinds: Sequence[str] = FIELD_KINDS,
        img_size: int = 64,
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 256,
        exponent_range: tuple[float, float] = (2.0, 4.0),
        time_range: tuple[float, float] = (2e-4, 4e-3),
        count_range: tuple[int, int] = (5, 50),
        seed: int = 0,
        augment: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        check_batch_and_split(batch_size, 0.0)
        if isinstance(kinds, str):
            raise ValueError(f"kinds must be a list of kind names, got the string {kinds!r}; pass [{kinds!r}]")
        kinds = [str(kind) for kind in kinds]
        for kind in kinds:
            if kind not in FIELD_KINDS:
                close = difflib.get_close_matches(kind, FIELD_KINDS, n=2, cutoff=0.5)
                hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
                raise ValueError(f"Unknown field kind {kind!r}.{hint} Valid kinds: {', '.join(FIELD_KINDS)}.")
        if not kinds or len(set(kinds)) != len(kinds):
            raise ValueError(f"kinds must be one or more distinct names of {', '.join(FIELD_KINDS)}; got {kinds}")
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 4:
            raise ValueError(
                f"img_size must be an integer side of at least 4 pixels (images are square), got {img_size!r}"
            )
        sizes = {"train_size": train_size, "val_size": val_size, "test_size": test_size}
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.ranges = {
            "exponent_range": _check_range("exponent_range", exponent_range, 0.0),
            "time_range": _check_range("time_range", time_range, 0.0),
            "count_range": _check_range("count_range", count_range, 0, integer=True),
        }
        # Kept for checkpoints, not merged into the logged hparams (see ImageDataModule).
        self.save_hyperparameters(logger=False)
        self.classes = kinds
        self.img_size = (img_size, img_size)
        self.batch_size, self.seed, self.augment = batch_size, seed, bool(augment)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.counts = {"train": train_size, "val": val_size, "test": test_size}
        self.datasets: dict[str, FieldDataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of kinds."""
        return len(self.classes)

    @property
    def class_names(self) -> list[str]:
        """The kinds by label (the same list as :attr:`classes`)."""
        return self.classes

    @property
    def preprocessing(self) -> dict[str, Any]:
        """1-channel square images in [0, 1], not normalized (``mean`` 0, ``std`` 1); the kinds as classes."""
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "classes": list(self.classes),
        }

    def dataset(self, split: str) -> FieldDataset:
        """The fields of ``split`` (augmented when it is ``"train"`` and ``augment``)."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; choose from {', '.join(SPLITS)}")
        augment = self.augment and split == "train"
        return FieldDataset(self.classes, self.img_size[0], self.counts[split], self.seed, split, augment, self.ranges)

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = {split: self.dataset(split) for split in SPLITS}

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(
                f"{type(self).__name__} has no {split!r} split (setup() was not called; the Trainer calls it)"
            )
        return make_loader(
            self.datasets[split], self.batch_size, shuffle, self.num_workers, self.pin_memory, collate_batched
        )


__all__ = [
    "FIELD_KINDS",
    "Blobs",
    "FieldDataset",
    "ScientificFieldsDataModule",
    "draw_blobs",
    "draw_field",
    "evolve_heat",
    "gaussian_random_field",
    "heat_initial_condition",
    "heat_snapshot",
    "microscopy_blobs",
    "render_blobs",
    "sample_seed",
]
