"""Point clouds: generated surface samples of simple shapes, and ModelNet's OFF meshes sampled to points.

Batches are ``(points, targets)``: float32 points ``(B, N, 3)`` (one ``x, y, z`` row per point) and class indices
``(B,)``. Every cloud is centered on its mean and scaled so that its farthest point lies on the unit sphere
(:func:`normalize_points`), as PointNet's data is. Training batches are augmented on the fly
(:class:`PointAugmentation`): a random rotation (about the up axis ``z``, or any), a random scale per axis and
clipped Gaussian jitter per point.

- :class:`ShapesPointCloudDataModule`: points sampled uniformly (by area) on the surface of generated shapes
  (:data:`SHAPES`), of random proportions, standing upright at a random angle about ``z``. Nothing is read; the same
  ``seed`` gives the same three splits everywhere.
- :class:`ModelNetDataModule`: the meshes of ModelNet10/40 as unzipped, ``<data_dir>/<class>/{train,test}/*.off``,
  each sampled to ``num_points`` points on its faces by area (:func:`read_off`, :func:`sample_triangles`).

>>> dm = ShapesPointCloudDataModule(num_points=64, num_train=2, num_val=1, num_test=1)
>>> dm.setup("fit")
>>> points, targets = next(iter(dm.train_dataloader()))
>>> tuple(points.shape), dm.num_classes
((16, 64, 3), 8)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.base import TensorSplitsDataModule, check_batch_and_split, split_indices

RotationName = Literal["none", "up", "so3"]
Tensor = torch.Tensor


# --- sampling on surfaces ---------------------------------------------------------------------------------------------
def sample_triangles(vertices: Tensor, triangles: Tensor, num_points: int, generator: torch.Generator) -> Tensor:
    """``num_points`` points drawn uniformly over the surface of a triangle mesh (a triangle by its area).

    Args:
        vertices: float coordinates ``(V, 3)``, or ``(M, V, 3)`` for ``M`` meshes of the same triangles.
        triangles: ``(F, 3)`` vertex indices.
        num_points: points to draw per mesh.
        generator: the random source.

    Returns:
        ``(num_points, 3)`` (or ``(M, num_points, 3)``) points in the dtype of ``vertices``.
    """
    batched = vertices.ndim == 3
    vertices = vertices if batched else vertices.unsqueeze(0)
    a, b, c = (vertices[:, triangles[:, i]] for i in range(3))  # (M, F, 3) each
    areas = torch.linalg.cross(b - a, c - a).norm(dim=-1) / 2  # (M, F)
    chosen = torch.multinomial(areas.double(), num_points, replacement=True, generator=generator)  # (M, n)
    index = chosen.unsqueeze(-1).expand(-1, -1, 3)
    a, b, c = (corner.gather(1, index) for corner in (a, b, c))  # (M, n, 3) each
    r1, r2 = torch.rand(2, *chosen.shape, 1, generator=generator, dtype=vertices.dtype)
    root = r1.sqrt()  # sqrt makes the barycentric coordinates uniform over the triangle's area
    points = (1 - root) * a + root * (1 - r2) * b + root * r2 * c
    return points if batched else points[0]


# The samplers draw ``n`` points on each of ``M`` shapes at once: a parameter is a float or an ``(M, 1)`` tensor, and
# every shape stands upright along ``z``.
def _rand(m: int, n: int, g: torch.Generator) -> Tensor:
    return torch.rand(m, n, generator=g, dtype=torch.float64)


def _where(parts: Tensor, *options: Tensor) -> Tensor:
    """Per point, the option its part index picks: ``parts (M, n)``, options ``(M, n, 3)``."""
    out = options[-1]
    for index in range(len(options) - 2, -1, -1):
        out = torch.where((parts == index).unsqueeze(-1), options[index], out)
    return out


def _parts(areas: Sequence[Tensor | float], m: int, n: int, g: torch.Generator) -> Tensor:
    """Which surface part each point lies on, drawn by the parts' areas: ``(M, n)`` indices into ``areas``."""
    weights = torch.cat([torch.as_tensor(area, dtype=torch.float64).expand(m, 1) for area in areas], dim=1)
    return torch.multinomial(weights, n, replacement=True, generator=g)


def _xyz(x: Tensor, y: Tensor, z: Tensor | float) -> Tensor:
    return torch.stack(torch.broadcast_tensors(x, y, torch.as_tensor(z, dtype=torch.float64)), dim=-1)


def _disc(m: int, n: int, radius: float, z: Tensor | float, g: torch.Generator) -> Tensor:
    rho, theta = radius * _rand(m, n, g).sqrt(), 2 * math.pi * _rand(m, n, g)
    return _xyz(rho * theta.cos(), rho * theta.sin(), z)


def _sphere(m: int, n: int, g: torch.Generator, radius: float = 1.0) -> Tensor:
    v = torch.randn(m, n, 3, generator=g, dtype=torch.float64)
    return radius * v / v.norm(dim=-1, keepdim=True)


def _cube(m: int, n: int, g: torch.Generator, half: float = 1.0) -> Tensor:
    points = half * (2 * torch.rand(m, n, 3, generator=g, dtype=torch.float64) - 1)
    face = torch.randint(0, 6, (m, n, 1), generator=g)  # six faces of equal area: one coordinate is +-half
    return points.scatter(-1, face // 2, half * (2.0 * (face % 2) - 1).double())


def _cylinder(m: int, n: int, g: torch.Generator, radius: float = 1.0, height: Tensor | float = 2.0) -> Tensor:
    parts = _parts([2 * math.pi * radius * height, math.pi * radius**2, math.pi * radius**2], m, n, g)
    theta, z = 2 * math.pi * _rand(m, n, g), height * (_rand(m, n, g) - 0.5)
    side = _xyz(radius * theta.cos(), radius * theta.sin(), z)
    return _where(parts, side, _disc(m, n, radius, height / 2, g), _disc(m, n, radius, -height / 2, g))


def _cone(m: int, n: int, g: torch.Generator, radius: float = 1.0, height: Tensor | float = 2.0) -> Tensor:
    slant = (torch.as_tensor(height, dtype=torch.float64) ** 2 + radius**2).sqrt()
    parts = _parts([math.pi * radius * slant, math.pi * radius**2], m, n, g)
    t, theta = _rand(m, n, g).sqrt(), 2 * math.pi * _rand(m, n, g)  # t: distance from the apex, as a fraction
    side = _xyz(radius * t * theta.cos(), radius * t * theta.sin(), height / 2 - height * t)
    return _where(parts, side, _disc(m, n, radius, -height / 2, g))


def _torus(m: int, n: int, g: torch.Generator, major: float = 1.0, minor: Tensor | float = 0.4) -> Tensor:
    # The area element is (major + minor cos phi) dphi dtheta: phi inverts its distribution function
    # (major phi + minor sin phi) / (2 pi major) = u, by Newton's method (monotonic, as minor < major).
    target = 2 * math.pi * major * _rand(m, n, g)
    phi = target / major
    for _ in range(30):
        phi = phi - (major * phi + minor * phi.sin() - target) / (major + minor * phi.cos())
    theta, ring = 2 * math.pi * _rand(m, n, g), major + minor * phi.cos()
    return _xyz(ring * theta.cos(), ring * theta.sin(), minor * phi.sin())


def _capsule(m: int, n: int, g: torch.Generator, radius: float = 1.0, length: Tensor | float = 2.0) -> Tensor:
    """A cylinder of ``length`` between two hemispheres of ``radius``."""
    parts = _parts([2 * math.pi * radius * length, 4 * math.pi * radius**2], m, n, g)
    theta, z = 2 * math.pi * _rand(m, n, g), length * (_rand(m, n, g) - 0.5)
    side = _xyz(radius * theta.cos(), radius * theta.sin(), z)
    ends = _sphere(m, n, g, radius)
    shift = torch.where(ends[..., 2] >= 0, 0.5, -0.5) * torch.as_tensor(length, dtype=torch.float64)
    return _where(parts, side, ends + _xyz(torch.zeros(()), torch.zeros(()), shift))


def _pyramid(m: int, n: int, g: torch.Generator, half: float = 1.0, height: Tensor | float = 1.5) -> Tensor:
    """A square pyramid: base ``2 half x 2 half`` at ``z = -height / 2``, apex at ``z = height / 2``."""
    z = torch.as_tensor(height, dtype=torch.float64).expand(m, 1) / 2  # (M, 1)
    corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1], [0, 0]], dtype=torch.float64) * half  # (5, 2)
    heights = torch.cat([-z.expand(m, 4), z], dim=1)  # (M, 5): the base, then the apex
    vertices = torch.cat([corners.expand(m, 5, 2), heights.unsqueeze(-1)], dim=-1)  # (M, 5, 3)
    triangles = torch.tensor([[0, 2, 1], [0, 3, 2], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    return sample_triangles(vertices, triangles, n, g)


def _octahedron(m: int, n: int, g: torch.Generator, radius: float = 1.0) -> Tensor:
    vertices = radius * torch.cat([torch.eye(3), -torch.eye(3)]).double()  # +x +y +z -x -y -z
    triangles = torch.tensor([[x, y, z] for x in (0, 3) for y in (1, 4) for z in (2, 5)])
    return sample_triangles(vertices.expand(m, 6, 3), triangles, n, g)


#: The generated shapes: ``name -> (sampler(M, n, generator, **params), {param: (low, high)} drawn per shape)``. Each
#: stands upright along ``z``; radii are 1 (the cube's and pyramid's half-side too), so a range sets proportions.
SHAPES: dict[str, tuple[Callable[..., Tensor], dict[str, tuple[float, float]]]] = {
    "sphere": (_sphere, {}),
    "cube": (_cube, {}),
    "cylinder": (_cylinder, {"height": (1.0, 3.0)}),
    "cone": (_cone, {"height": (1.0, 3.0)}),
    "torus": (_torus, {"minor": (0.2, 0.5)}),
    "pyramid": (_pyramid, {"height": (1.0, 2.5)}),
    "capsule": (_capsule, {"length": (1.5, 3.0)}),
    "octahedron": (_octahedron, {}),
}


def sample_shape(name: str, num_points: int, generator: torch.Generator | None = None, **params: float) -> Tensor:
    """``(num_points, 3)`` float64 points uniform over the surface of a shape of :data:`SHAPES` (``z`` up).

    Args:
        name: the shape.
        num_points: points to draw.
        generator: the random source (``None``: a fresh one seeded 0).
        **params: the shape's proportions (``height`` of a cylinder, cone or pyramid; ``minor`` radius of a torus of
            major radius 1; ``length`` of a capsule's cylinder); defaults as in each sampler.

    >>> points = sample_shape("sphere", 100)
    >>> bool(torch.allclose(points.norm(dim=1), torch.ones(100, dtype=torch.float64)))
    True
    """
    if name not in SHAPES:
        raise ValueError(f"Unknown shape {name!r}; choose from {', '.join(SHAPES)}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    return SHAPES[name][0](1, num_points, generator, **params)[0]


def normalize_points(points: Tensor) -> Tensor:
    """Clouds ``(..., N, 3)`` centered on their mean and scaled so that the farthest point is at distance 1."""
    centered = points - points.mean(dim=-2, keepdim=True)
    radius = centered.norm(dim=-1).amax(dim=-1, keepdim=True).clamp(min=1e-12)
    return centered / radius.unsqueeze(-1)


def rotation_about_z(angles: Tensor) -> Tensor:
    """Rotation matrices ``(B, 3, 3)`` by ``angles`` ``(B,)`` (radians) about the ``z`` axis."""
    cos, sin, zero, one = angles.cos(), angles.sin(), torch.zeros_like(angles), torch.ones_like(angles)
    return torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).view(-1, 3, 3)


def random_rotations(
    batch: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``(batch, 3, 3)`` rotations uniform over SO(3) (QR of Gaussian matrices, signs fixed, determinant +1)."""
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # unique Q: the Haar measure
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


# --- augmentation and datasets ---------------------------------------------------------------------------------------
class PointAugmentation:
    """Training augmentation of a batch of clouds ``(B, N, 3)``: rotation, then a scale per axis, then jitter.

    After it, every point is within ``scale[1] + jitter_clip * sqrt(3)`` of the origin when the clouds were within 1.

    Args:
        rotation: ``"none"``, ``"up"`` (a uniform angle about ``z``) or ``"so3"`` (uniform over all rotations).
        scale: range of the scale drawn per cloud and axis (anisotropic; ``(1, 1)`` for none).
        jitter_std: standard deviation of the Gaussian noise added to each coordinate.
        jitter_clip: the noise is clipped to ``[-jitter_clip, jitter_clip]``.
    """

    def __init__(
        self,
        rotation: RotationName = "up",
        scale: tuple[float, float] = (0.8, 1.25),
        jitter_std: float = 0.01,
        jitter_clip: float = 0.05,
    ) -> None:
        if rotation not in ("none", "up", "so3"):
            raise ValueError(f"Unknown rotation {rotation!r}; choose 'none', 'up' or 'so3'")
        if not (0 < scale[0] <= scale[1]) or jitter_std < 0 or jitter_clip < 0:
            raise ValueError(
                f"need 0 < scale[0] <= scale[1] and jitter_std, jitter_clip >= 0, got {scale}, "
                f"{jitter_std}, {jitter_clip}"
            )
        self.rotation, self.scale = rotation, (float(scale[0]), float(scale[1]))
        self.jitter_std, self.jitter_clip = jitter_std, jitter_clip

    def __call__(self, points: Tensor, generator: torch.Generator | None = None) -> Tensor:
        batch = points.shape[0]
        if self.rotation == "up":
            matrices = rotation_about_z(2 * math.pi * torch.rand(batch, generator=generator, dtype=points.dtype))
            points = points @ matrices.transpose(1, 2)  # (B, N, 3) @ (B, 3, 3): each row rotated
        elif self.rotation == "so3":
            points = points @ random_rotations(batch, generator, points.dtype).transpose(1, 2)
        low, high = self.scale
        if (low, high) != (1.0, 1.0):
            points = points * (low + (high - low) * torch.rand(batch, 1, 3, generator=generator, dtype=points.dtype))
        if self.jitter_std > 0:
            noise = self.jitter_std * torch.randn(points.shape, generator=generator, dtype=points.dtype)
            points = points + noise.clamp(-self.jitter_clip, self.jitter_clip)
        return points


class PointCloudDataset(Dataset):
    """Clouds held as one float32 tensor ``(M, N, 3)``; a batch is sliced (and augmented) in one go."""

    def __init__(self, points: Tensor, targets: Tensor, augmentation: PointAugmentation | None = None) -> None:
        if points.ndim != 3 or points.shape[-1] != 3 or len(points) != len(targets):
            raise ValueError(f"need points (M, N, 3) and M targets, got {tuple(points.shape)} and {len(targets)}")
        self.points, self.targets, self.augmentation = points.float(), targets.long(), augmentation

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        points, targets = self.__getitems__([index])
        return points[0], targets[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        points = self.points[index]  # (B, N, 3)
        if self.augmentation is not None:
            points = self.augmentation(points)
        return points, self.targets[index]


class PointCloudDataModule(TensorSplitsDataModule):
    """Base of the point-cloud datamodules: three splits of normalized clouds, training batches augmented.

    A subclass sets :attr:`classes` and implements :meth:`load_splits`.

    Args:
        num_points: points per cloud ``N``.
        rotation: training rotation: ``"none"``, ``"up"`` (about ``z``) or ``"so3"`` (any).
        scale: range of the training scale per axis.
        jitter_std: standard deviation of the training jitter per coordinate.
        jitter_clip: the jitter's bound.
        batch_size: clouds per batch.
        seed: seed of the data and the splits.
        num_workers: loader worker processes (in-memory clouds need none).
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    classes: list[str]

    def __init__(
        self,
        num_points: int = 1024,
        rotation: RotationName = "up",
        scale: tuple[float, float] = (0.8, 1.25),
        jitter_std: float = 0.01,
        jitter_clip: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, pin_memory)
        if num_points < 1:
            raise ValueError(f"num_points must be positive, got {num_points}")
        self.num_points = num_points
        self.augmentation = PointAugmentation(rotation, tuple(scale), jitter_std, jitter_clip)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Float clouds ``(N, 3)``, each centered on its mean and scaled to the unit sphere; the class names."""
        return {
            "input": "series",
            "in_features": 3,
            "num_points": self.num_points,
            "points": "each cloud centered on its mean and scaled so its farthest point is at distance 1",
            "classes": list(self.classes),
        }

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Normalized clouds ``(M, N, 3)`` and class indices ``(M,)`` of ``train``, ``val`` and ``test``."""
        raise NotImplementedError

    def make_datasets(self, splits: dict[str, tuple[Tensor, Tensor]]) -> dict[str, PointCloudDataset]:
        """The clouds of each split; training batches augmented."""
        return {
            split: PointCloudDataset(points, targets, self.augmentation if split == "train" else None)
            for split, (points, targets) in splits.items()
        }


class ShapesPointCloudDataModule(PointCloudDataModule):
    """Points on the surfaces of generated shapes (sphere, cube, cylinder, cone, torus, pyramid, capsule, octahedron).

    Each cloud is a fresh sample of ``num_points`` points uniform over a shape's surface, with random proportions
    (:data:`SHAPES`), standing upright at a random angle about ``z``, then normalized to the unit sphere.

    Args:
        num_points: points per cloud.
        num_train: training clouds per class.
        num_val: validation clouds per class.
        num_test: test clouds per class.
        shapes: the classes, a subset of :data:`SHAPES` (``None``: all, in that order).
        rotation: training rotation: ``"none"``, ``"up"`` (about ``z``) or ``"so3"`` (any).
        scale: range of the training scale per axis.
        jitter_std: standard deviation of the training jitter per coordinate.
        jitter_clip: the jitter's bound.
        batch_size: clouds per batch.
        seed: seed of the clouds; each split has its own stream, so the same seed gives the same splits.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        num_points: int = 1024,
        num_train: int = 250,
        num_val: int = 25,
        num_test: int = 50,
        shapes: Sequence[str] | None = None,
        rotation: RotationName = "up",
        scale: tuple[float, float] = (0.8, 1.25),
        jitter_std: float = 0.01,
        jitter_clip: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(
            num_points, rotation, scale, jitter_std, jitter_clip, batch_size, seed, num_workers, pin_memory
        )
        if min(num_train, num_val, num_test) < 1:
            raise ValueError(f"need at least one cloud per class and split, got {num_train}, {num_val}, {num_test}")
        self.classes = list(SHAPES) if shapes is None else [str(name) for name in shapes]
        unknown = [name for name in self.classes if name not in SHAPES]
        if unknown or len(set(self.classes)) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"shapes must be two or more distinct names of {', '.join(SHAPES)}; got {self.classes}")
        self.save_hyperparameters(logger=False)
        self.counts = {"train": num_train, "val": num_val, "test": num_test}

    def generate(self, split: str) -> tuple[Tensor, Tensor]:
        """The normalized clouds ``(M, N, 3)`` and targets of one split, from its own stream of ``seed``."""
        generator = torch.Generator().manual_seed(3 * self.seed + ("train", "val", "test").index(split))
        clouds, targets = [], []
        count = self.counts[split]
        for target, name in enumerate(self.classes):
            sampler, ranges = SHAPES[name]
            params = {key: low + (high - low) * _rand(count, 1, generator) for key, (low, high) in ranges.items()}
            clouds.append(sampler(count, self.num_points, generator, **params))  # (count, N, 3)
            targets += [target] * count
        points = torch.cat(clouds)  # (M, N, 3)
        angles = 2 * math.pi * _rand(len(points), 1, generator)[:, 0]
        points = points @ rotation_about_z(angles).transpose(1, 2)
        return normalize_points(points).float(), torch.tensor(targets)

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        return {split: self.generate(split) for split in ("train", "val", "test")}


# --- OFF meshes and ModelNet -----------------------------------------------------------------------------------------
def read_off(path: str | os.PathLike[str]) -> tuple[Tensor, Tensor]:
    """The vertices and triangles of an OFF mesh file; polygons are split into triangles (a fan from their first
    vertex, right for the convex faces OFF files hold).

    Reads the header ``OFF`` followed by the counts ``V F E``, on the next line or on the same one (ModelNet's files
    often read ``OFF8 6 0``); ``#`` comments and blank lines are skipped; values after a vertex's three coordinates
    or a face's indices (colors) are ignored.

    Returns:
        float64 vertices ``(V, 3)`` and long triangles ``(T, 3)``.

    Raises:
        FileNotFoundError: naming the file when it is missing.
        ValueError: naming the file, the line and what was expected there when the file is not such a mesh.
    """
    where = os.path.abspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No OFF mesh file at {where}")
    try:
        with open(path, encoding="ascii") as file:
            text = file.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{where} is not an OFF text file (byte {error.start} is not ASCII)") from error
    lines = [(number, line.split("#", 1)[0].split()) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(number, tokens) for number, tokens in lines if tokens]
    if not lines or not lines[0][1][0].startswith("OFF"):
        found = " ".join(lines[0][1])[:40] if lines else "an empty file"
        raise ValueError(f"{where}: expected the header 'OFF' on the first line, found {found!r}")
    first, header = lines[0][1][0][3:], lines[0][1][1:]
    counts, body = ([first, *header] if first else header), lines[1:]
    counts_line = lines[0][0]
    if not counts:  # counts on the next line
        if not body:
            raise ValueError(f"{where}: expected the counts 'vertices faces edges' after 'OFF', found the end")
        counts_line, counts, body = body[0][0], body[0][1], body[1:]
    try:
        num_vertices, num_faces = int(counts[0]), int(counts[1])
    except (ValueError, IndexError):
        raise ValueError(
            f"{where}: line {counts_line}: expected the counts 'vertices faces edges', found {' '.join(counts)!r}"
        ) from None
    if num_vertices < 3 or num_faces < 1:
        raise ValueError(
            f"{where}: line {counts_line}: a mesh needs at least 3 vertices and 1 face, the header "
            f"says {num_vertices} and {num_faces}"
        )
    if len(body) < num_vertices + num_faces:
        raise ValueError(
            f"{where}: the header (line {counts_line}) announces {num_vertices} vertices and {num_faces} "
            f"faces, but the file ends after {len(body)} lines of them (truncated?)"
        )
    vertices = _parse_vertices(where, body[:num_vertices])
    triangles = _parse_faces(where, body[num_vertices : num_vertices + num_faces], num_vertices)
    return torch.from_numpy(vertices), torch.from_numpy(triangles)


def _parse_vertices(where: str, lines: list[tuple[int, list[str]]]) -> np.ndarray:
    try:
        if all(len(tokens) == 3 for _, tokens in lines):  # the common case, parsed in one go
            vertices = np.array([token for _, tokens in lines for token in tokens], dtype=np.float64).reshape(-1, 3)
        else:
            vertices = np.array([tokens[:3] for _, tokens in lines], dtype=np.float64)
    except ValueError:
        for number, tokens in lines:
            try:
                if len(tokens) < 3:
                    raise ValueError
                [float(token) for token in tokens[:3]]
            except ValueError:
                raise ValueError(
                    f"{where}: line {number}: expected a vertex 'x y z', found {' '.join(tokens)!r}"
                ) from None
        raise
    if not np.isfinite(vertices).all():
        number = lines[int(np.argwhere(~np.isfinite(vertices))[0, 0])][0]
        raise ValueError(f"{where}: line {number}: vertex coordinates must be finite numbers")
    return vertices


def _parse_faces(where: str, lines: list[tuple[int, list[str]]], num_vertices: int) -> np.ndarray:
    triangles: list[list[int]] = []
    for number, tokens in lines:
        try:
            size = int(tokens[0])
            indices = [int(token) for token in tokens[1 : 1 + size]]
        except ValueError:
            size, indices = -1, []
        if size < 3 or len(indices) != size:
            raise ValueError(
                f"{where}: line {number}: expected a face 'n i1 ... in' with n >= 3 vertex indices, "
                f"found {' '.join(tokens)!r}"
            )
        if min(indices) < 0 or max(indices) >= num_vertices:
            raise ValueError(
                f"{where}: line {number}: vertex indices must be in [0, {num_vertices - 1}], found {' '.join(tokens)!r}"
            )
        triangles += [[indices[0], indices[i], indices[i + 1]] for i in range(1, size - 1)]
    return np.array(triangles, dtype=np.int64)


def sample_off(path: str | os.PathLike[str], num_points: int, generator: torch.Generator) -> Tensor:
    """``(num_points, 3)`` float64 points uniform over the faces of an OFF mesh (see :func:`read_off`).

    Raises:
        ValueError: naming the file when its faces have no area to sample from.
    """
    vertices, triangles = read_off(path)
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    if not torch.linalg.cross(b - a, c - a).norm(dim=1).sum() > 0:
        raise ValueError(f"{os.path.abspath(path)}: every face has zero area; there is no surface to sample points on")
    return sample_triangles(vertices, triangles, num_points, generator)


class ModelNetDataModule(PointCloudDataModule):
    """ModelNet10/40 meshes (``<data_dir>/<class>/{train,test}/*.off``), each sampled to ``num_points`` points.

    Points are drawn on the faces by area (:func:`sample_off`) once, at setup, from ``seed``; the validation split is
    drawn from the training files by ``val_fraction``. Put the unzipped ``ModelNet40.zip`` (or ModelNet10) folder's
    class folders in ``data_dir``; nothing is downloaded. Every file is read at setup, so a broken one stops the run
    before training, named.

    Args:
        data_dir: the folder of class folders.
        num_points: points per cloud.
        classes: the classes to read (``None``: every class folder, sorted).
        val_fraction: fraction of the training files held out for validation.
        rotation: training rotation: ``"none"``, ``"up"`` (about ``z``, ModelNet's up axis) or ``"so3"``.
        scale: range of the training scale per axis.
        jitter_std: standard deviation of the training jitter per coordinate.
        jitter_clip: the jitter's bound.
        batch_size: clouds per batch.
        seed: seed of the sampled points and the split.
        num_workers: loader worker processes.
        pin_memory: pin host memory; ``None`` pins when CUDA is available.
    """

    def __init__(
        self,
        data_dir: str = "data/ModelNet40",
        num_points: int = 1024,
        classes: Sequence[str] | None = None,
        val_fraction: float = 0.1,
        rotation: RotationName = "up",
        scale: tuple[float, float] = (0.8, 1.25),
        jitter_std: float = 0.01,
        jitter_clip: float = 0.05,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(
            num_points, rotation, scale, jitter_std, jitter_clip, batch_size, seed, num_workers, pin_memory
        )
        check_batch_and_split(batch_size, val_fraction)
        self.save_hyperparameters(logger=False)
        self.data_dir = os.path.expanduser(data_dir)
        self.val_fraction = val_fraction
        self._chosen = None if classes is None else [str(name) for name in classes]
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        """The class folders read (class index = position)."""
        if self._classes is None:
            root = os.path.abspath(self.data_dir)
            layout = "<class>/train/*.off and <class>/test/*.off (the class folders of the unzipped ModelNet40.zip)"
            if not os.path.isdir(root):
                raise FileNotFoundError(f"No ModelNet data at {root}/: put the class folders there, as {layout}")
            found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
            chosen = found if self._chosen is None else self._chosen
            missing = [name for name in chosen if name not in found]
            if missing:
                raise FileNotFoundError(f"No class folder {', '.join(missing)} in {root}/; it has {found}")
            if len(chosen) < 2:
                raise ValueError(
                    f"{root}/ holds {len(chosen)} class folder(s) {chosen}; a classifier needs at least "
                    f"two, laid out as {layout}"
                )
            self._classes = chosen
        return self._classes

    def files(self, split: Literal["train", "test"]) -> list[tuple[str, int]]:
        """The ``.off`` files of a split with their class indices, sorted.

        Raises:
            FileNotFoundError: naming the class folder whose ``train/`` or ``test/`` folder is missing or empty.
        """
        found = []
        for target, name in enumerate(self.classes):
            folder = os.path.join(os.path.abspath(self.data_dir), name, split)
            names = sorted(f for f in os.listdir(folder) if f.lower().endswith(".off")) if os.path.isdir(folder) else []
            if not names:
                raise FileNotFoundError(f"No .off files in {folder}/; expected {name}/{split}/*.off meshes there")
            found += [(os.path.join(folder, file), target) for file in names]
        return found

    def _read(self, files: list[tuple[str, int]], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        clouds = torch.stack([sample_off(path, self.num_points, generator) for path, _ in files])
        return normalize_points(clouds).float(), torch.tensor([target for _, target in files])

    def load_splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        points, targets = self._read(self.files("train"), generator)
        train, val = split_indices(len(points), self.val_fraction, self.seed)
        test = self._read(self.files("test"), generator)
        return {"train": (points[train], targets[train]), "val": (points[val], targets[val]), "test": test}


__all__ = [
    "SHAPES",
    "ModelNetDataModule",
    "PointAugmentation",
    "PointCloudDataModule",
    "PointCloudDataset",
    "ShapesPointCloudDataModule",
    "normalize_points",
    "random_rotations",
    "read_off",
    "rotation_about_z",
    "sample_off",
    "sample_shape",
    "sample_triangles",
]
