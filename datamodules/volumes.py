"""3-d volumes for volumetric classifiers (``zoo.CNN3D``): generated shapes, and a folder of ``.npy`` arrays.

Batches are ``(volumes, targets)``: float32 volumes ``(B, C, D, H, W)`` normalized per channel with the mean and
standard deviation of the training split, and class indices ``(B,)``. The datamodules expose ``num_classes``,
``in_channels``, ``img_size`` (height, width) and ``volume_depth`` (``D``), which the CLI links into the model.

- :class:`ShapesVolumeDataModule`: one solid per volume (:data:`VOLUME_SHAPES`: ball, cube, cylinder, hollow shell,
  cross of three bars, torus) at a random position, size and orientation, anti-aliased, with Gaussian noise; the
  same ``seed`` gives the same splits everywhere.
- :class:`NpyVolumeFolderDataModule`: ``<data_dir>/<class>/*.npy`` arrays of ``(D, H, W)`` or ``(C, D, H, W)``,
  read with ``allow_pickle=False`` and split into train/val/test by ``seed``. uint8 files are scaled to [0, 1] (as
  images are); other numeric types are read as they are.

>>> dm = ShapesVolumeDataModule(size=8, num_train=2, num_val=1, num_test=1)
>>> dm.setup("fit")
>>> volumes, targets = next(iter(dm.train_dataloader()))
>>> tuple(volumes.shape), dm.num_classes
((12, 1, 8, 8, 8), 6)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import TensorSplitsDataModule, check_batch_and_split, split_indices

Tensor = torch.Tensor


# --- generated shapes ----------------------------------------------------------------------------------------------
def _box(p: Tensor, half: Tensor | Sequence[float]) -> Tensor:
    """Signed distance to an axis-aligned box of half-sides ``half`` centered at the origin."""
    q = p.abs() - torch.as_tensor(half, dtype=p.dtype)
    return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)


def _ball(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 1


def _shell(p: Tensor) -> Tensor:
    radius = p.norm(dim=-1)
    return torch.maximum(radius - 1, 0.6 - radius)


def _cube(p: Tensor) -> Tensor:
    return _box(p, [0.75, 0.75, 0.75])


def _cylinder(p: Tensor) -> Tensor:
    d = torch.stack([p[..., :2].norm(dim=-1) - 0.7, p[..., 2].abs() - 0.8], dim=-1)
    return d.clamp(min=0).norm(dim=-1) + d.amax(dim=-1).clamp(max=0)


def _cross(p: Tensor) -> Tensor:
    bars = [_box(p, half) for half in ([1, 0.25, 0.25], [0.25, 1, 0.25], [0.25, 0.25, 1])]
    return torch.stack(bars).amin(dim=0)


def _torus(p: Tensor) -> Tensor:
    return torch.stack([p[..., :2].norm(dim=-1) - 0.7, p[..., 2]], dim=-1).norm(dim=-1) - 0.3


#: The generated solids by name, each a signed distance function of points ``(..., 3)`` in the shape's own frame
#: (negative inside), all within :data:`SHAPE_EXTENT` of the origin: ``ball`` (radius 1), ``cube`` (half-side
#: 0.75), ``cylinder`` (radius 0.7, half-height 0.8, along z), ``shell`` (radii 0.6 to 1), ``cross`` (three bars of
#: half-length 1 and half-width 0.25 along x, y, z), ``torus`` (radii 0.7 and 0.3, about z).
VOLUME_SHAPES: dict[str, Callable[[Tensor], Tensor]] = {
    "ball": _ball,
    "cube": _cube,
    "cylinder": _cylinder,
    "shell": _shell,
    "cross": _cross,
    "torus": _torus,
}
#: Radius of the ball around the origin that holds every shape of :data:`VOLUME_SHAPES` at scale 1 (the cube's corners).
SHAPE_EXTENT = math.sqrt(3) * 0.75


def render_shape(
    name: str,
    size: int,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    scale: float = 0.5,
    rotation: Tensor | None = None,
) -> Tensor:
    """A ``(size, size, size)`` float32 volume in [0, 1]: the solid ``name`` of :data:`VOLUME_SHAPES`, scaled by
    ``scale``, rotated by ``rotation`` (``3x3``) and moved to ``center``, in the cube ``[-1, 1]^3`` (axes ``D, H, W`` =
    ``z, y, x``). A voxel's value is the fraction of it inside the solid, approximated from the signed distance at
    its center (anti-aliasing), so the sum of the values times the voxel volume is about the solid's volume.

    >>> volume = render_shape("ball", 16, scale=0.5)
    >>> round(float(volume.sum()) * (2 / 16) ** 3 / (4 / 3 * math.pi * 0.5**3), 2)  # rendered / true volume
    1.01
    """
    rotation = torch.eye(3) if rotation is None else rotation
    return render_shapes(name, size, torch.tensor([center]), torch.tensor([scale]), rotation.unsqueeze(0))[0]


def render_shapes(name: str, size: int, centers: Tensor, scales: Tensor, rotations: Tensor) -> Tensor:
    """:func:`render_shape` for ``M`` solids at once: ``centers (M, 3)``, ``scales (M,)``, ``rotations (M, 3, 3)``
    -> ``(M, size, size, size)``."""
    if name not in VOLUME_SHAPES:
        raise ValueError(f"Unknown shape {name!r}; choose from {', '.join(VOLUME_SHAPES)}")
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) * 2 / size - 1  # voxel centers
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    grid = torch.stack([x, y, z], dim=-1).view(1, -1, 3)  # (1, D * H * W, 3)
    p = (grid - centers.double().view(-1, 1, 3)) @ rotations.double()  # into each shape's frame: R^T (x - c)
    scales = scales.double().view(-1, 1)
    distance = VOLUME_SHAPES[name](p / scales.unsqueeze(-1)) * scales  # (M, D * H * W)
    return (0.5 - distance * size / 2).clamp(0, 1).float().view(-1, size, size, size)


def _random_rotation(generator: torch.Generator) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.linalg.det(q) > 0 else -q


# --- datasets and datamodules -----------------------------------------------------------------------------------------
class VolumeDataset(Dataset):
    """Volumes held as one float32 tensor ``(M, C, D, H, W)``; a batch is sliced and normalized in one go."""

    def __init__(self, volumes: Tensor, targets: Tensor, mean: Tensor, std: Tensor) -> None:
        self.volumes, self.targets = volumes, targets.long()
        self.mean, self.std = mean.view(1, -1, 1, 1, 1).float(), std.view(1, -1, 1, 1, 1).float()  # (1, C, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        volumes, targets = self.__getitems__([index])
        return volumes[0], targets[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return (self.volumes[index] - self.mean) / self.std, self.targets[index]


class VolumeDataModule(TensorSplitsDataModule):
    """Base of the volume datamodules: three splits of volumes, normalized with the training split's statistics.

    A subclass sets ``classes``, ``in_channels``, ``img_size`` and ``volume_depth`` and implements
    :meth:`load_splits`.

    Args:
        batch_size: volumes per batch.
        seed: seed of the data and the splits.
        num_workers: loader worker processes (in-memory volumes need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    classes: list[str]
    in_channels: int
    img_size: tuple[int, int]
    volume_depth: int

    def __init__(self, batch_size: int = 32, seed: int = 0, num_workers: int = 0, pin_memory: bool | None = None):
        super().__init__(batch_size, seed, num_workers, pin_memory)
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Volumes of ``in_channels`` at ``volume_depth x img_size``, their normalization (after setup) and classes."""
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "volume_depth": self.volume_depth,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "classes": list(self.classes),
        }

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """float32 volumes ``(M, C, D, H, W)`` (unnormalized) and class indices of ``train``, ``val`` and ``test``."""
        raise NotImplementedError

    def make_datasets(self, splits: dict[str, tuple[Tensor, Tensor]]) -> dict[str, VolumeDataset]:
        """The volumes of each split, normalized per channel with the training split's statistics."""
        train = splits["train"][0].transpose(0, 1).flatten(1).double()  # (C, M * D * H * W)
        mean, std = train.mean(dim=1), train.std(dim=1, correction=0).clamp(min=1e-8)
        self.mean, self.std = tuple(mean.tolist()), tuple(std.tolist())
        return {split: VolumeDataset(x, y, mean, std) for split, (x, y) in splits.items()}


class ShapesVolumeDataModule(VolumeDataModule):
    """Generated 1-channel volumes of one solid each (ball, cube, cylinder, hollow shell, cross, torus) with noise.

    Each solid (:func:`render_shape`) has a random orientation, a scale drawn from ``scale`` and a random center that
    keeps it inside the volume; Gaussian noise of ``noise_std`` is added and the values are clipped to [0, 1].

    Args:
        size: the volumes' side (``D = H = W``).
        num_train: training volumes per class.
        num_val: validation volumes per class.
        num_test: test volumes per class.
        shapes: the classes, a subset of :data:`VOLUME_SHAPES` (``None``: all, in that order).
        scale: range of the solids' scale (a ball's radius; the volume spans ``[-1, 1]``).
        noise_std: standard deviation of the Gaussian noise on the [0, 1] values.
        batch_size: volumes per batch.
        seed: seed of the volumes; each split has its own stream, so the same seed gives the same splits.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    in_channels = 1

    def __init__(
        self,
        size: int = 16,
        num_train: int = 200,
        num_val: int = 25,
        num_test: int = 50,
        shapes: Sequence[str] | None = None,
        scale: tuple[float, float] = (0.35, 0.6),
        noise_std: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, pin_memory)
        if size < 4 or min(num_train, num_val, num_test) < 1 or noise_std < 0:
            raise ValueError(
                f"need size >= 4, one or more volumes per class and split and noise_std >= 0, got "
                f"{size}, {num_train}, {num_val}, {num_test}, {noise_std}"
            )
        if not 0 < scale[0] <= scale[1] or scale[1] * SHAPE_EXTENT >= 1:
            raise ValueError(f"scale must be a range in (0, {1 / SHAPE_EXTENT:.3f}) so that solids fit, got {scale}")
        self.classes = list(VOLUME_SHAPES) if shapes is None else [str(name) for name in shapes]
        unknown = [name for name in self.classes if name not in VOLUME_SHAPES]
        if unknown or len(set(self.classes)) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(
                f"shapes must be two or more distinct names of {', '.join(VOLUME_SHAPES)}; got {self.classes}"
            )
        self.save_hyperparameters(logger=False)
        self.size, self.scale, self.noise_std = size, (float(scale[0]), float(scale[1])), noise_std
        self.img_size, self.volume_depth = (size, size), size
        self.counts = {"train": num_train, "val": num_val, "test": num_test}

    def generate(self, split: str) -> tuple[Tensor, Tensor]:
        """The volumes ``(M, 1, D, H, W)`` in [0, 1] and targets of one split, from its own stream of ``seed``."""
        generator = torch.Generator().manual_seed(3 * self.seed + ("train", "val", "test").index(split))
        low, high = self.scale
        volumes, targets, count = [], [], self.counts[split]
        for target, name in enumerate(self.classes):
            scales = low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)
            room = (1 - scales * SHAPE_EXTENT).unsqueeze(1)  # the centers' freedom that keeps each solid inside
            centers = room * (2 * torch.rand(count, 3, generator=generator, dtype=torch.float64) - 1)
            rotations = torch.stack([_random_rotation(generator) for _ in range(count)])
            for start in range(0, count, 64):  # chunks bound the memory of the (M, D * H * W, 3) coordinates
                chunk = slice(start, start + 64)
                volumes.append(render_shapes(name, self.size, centers[chunk], scales[chunk], rotations[chunk]))
            targets += [target] * count
        x = torch.cat(volumes).unsqueeze(1)  # (M, 1, D, H, W)
        if self.noise_std:
            x = (x + self.noise_std * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        return x, torch.tensor(targets)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        return {split: self.generate(split) for split in ("train", "val", "test")}


class NpyVolumeFolderDataModule(VolumeDataModule):
    """Volumes from ``<data_dir>/<class>/*.npy`` files, ``(D, H, W)`` or ``(C, D, H, W)`` arrays of one shape.

    Files are read with ``allow_pickle=False``; uint8 arrays are scaled to [0, 1], other numeric arrays read as they
    are. The files are split into train/val/test by ``seed``; the normalization's mean and standard deviation per
    channel come from the training split alone.

    Args:
        data_dir: the folder of class folders.
        val_fraction: fraction of the files (after the test split) held out for validation.
        test_fraction: fraction of the files held out for testing.
        batch_size: volumes per batch.
        seed: seed of the splits.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        data_dir: str = "data/volumes",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, pin_memory)
        check_batch_and_split(batch_size, val_fraction, test_fraction)
        self.save_hyperparameters(logger=False)
        self.data_dir = os.path.expanduser(data_dir)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self._files: list[tuple[str, int]] | None = None
        self._classes: list[str] = []
        self._shape: tuple[int, int, int, int] | None = None

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        """Sorted class-folder names (class index = position)."""
        _ = self.files
        return self._classes

    @property
    def files(self) -> list[tuple[str, int]]:
        """Every ``.npy`` file with its class index, sorted (class index = position in :attr:`classes`).

        Raises:
            FileNotFoundError: naming the folder when it is missing, or has fewer than two class folders of files.
        """
        if self._files is None:
            root = os.path.abspath(self.data_dir)
            layout = "one folder of .npy volumes per class: <class>/*.npy, each (D, H, W) or (C, D, H, W)"
            if not os.path.isdir(root):
                raise FileNotFoundError(f"No volume folder at {root}/; put {layout} there")
            classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            found = []
            for target, name in enumerate(classes):
                files = sorted(f for f in os.listdir(os.path.join(root, name)) if f.lower().endswith(".npy"))
                if not files:
                    raise FileNotFoundError(f"No .npy files in {os.path.join(root, name)}/; put {layout} there")
                found += [(os.path.join(root, name, file), target) for file in files]
            if len(classes) < 2:
                raise FileNotFoundError(
                    f"{root}/ holds {len(classes)} class folder(s) {classes}; a classifier "
                    f"needs at least two: put {layout} there"
                )
            self._classes, self._files = classes, found
        return self._files

    @property
    def volume_shape(self) -> tuple[int, int, int, int]:
        """``(C, D, H, W)`` of every volume, read from the first file's header."""
        if self._shape is None:
            path = self.files[0][0]
            shape = tuple(_load(path, mmap_mode="r").shape)
            self._shape = _volume_shape(path, shape)
        return self._shape

    @property
    def in_channels(self) -> int:  # type: ignore[override]
        return self.volume_shape[0]

    @property
    def volume_depth(self) -> int:  # type: ignore[override]
        return self.volume_shape[1]

    @property
    def img_size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.volume_shape[2], self.volume_shape[3]

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        files, expected = self.files, self.volume_shape
        volumes = []
        for path, _ in files:
            array = _load(path)
            if _volume_shape(path, array.shape) != expected:
                raise ValueError(
                    f"{path} holds an array of shape {array.shape}; every volume must have the first "
                    f"file's shape {expected} (C, D, H, W) or {expected[1:]} (D, H, W)"
                )
            volume = torch.from_numpy(array.astype(np.float32)).reshape(expected)
            if array.dtype == np.uint8:
                volume /= 255
            elif not torch.isfinite(volume).all():
                raise ValueError(f"{path} holds NaN or infinite values (or values beyond float32); clean it first")
            volumes.append(volume)
        x, y = torch.stack(volumes), torch.tensor([target for _, target in files])
        rest, test = split_indices(len(x), self.test_fraction, self.seed)
        train, val = split_indices(len(rest), self.val_fraction, self.seed + 1)
        train, val = rest[train], rest[val]
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}


def _load(path: str, mmap_mode: str | None = None) -> np.ndarray:
    """A numeric array from an ``.npy`` file (no pickles), or an error naming the file and what was expected."""
    try:
        with open(path, "rb") as file:
            head = file.read(6)
        # np.load reads anything else as a pickle (refused here) or a zip as an .npz archive: say so instead
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False) if head == b"\x93NUMPY" else None
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(
            f"{path} is not a readable .npy array of numbers (np.load: {error}); save volumes with "
            "np.save(path, array) from a numeric array"
        ) from error
    if array is None:
        raise ValueError(
            f"{path} is not an .npy file: it starts with {head!r}, not the .npy magic string (an .npz archive, a "
            "pickle or another format?); save volumes with np.save(path, array) from a numeric array"
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path} holds {array.dtype} values; volumes must be numbers (bool, int, uint or float)")
    return array


def _volume_shape(path: str, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(C, D, H, W)`` of an array of shape ``(D, H, W)`` or ``(C, D, H, W)``, or an error naming the file."""
    if len(shape) not in (3, 4) or 0 in shape:
        raise ValueError(f"{path} holds an array of shape {tuple(shape)}; expected a volume (D, H, W) or (C, D, H, W)")
    return (1, *shape) if len(shape) == 3 else tuple(shape)  # type: ignore[return-value]


__all__ = [
    "SHAPE_EXTENT",
    "VOLUME_SHAPES",
    "NpyVolumeFolderDataModule",
    "ShapesVolumeDataModule",
    "VolumeDataModule",
    "VolumeDataset",
    "render_shape",
    "render_shapes",
]
