"""Point clouds: the generated shapes lie on the surfaces they name, the OFF reader reads meshes written here, broken
files are named, augmentation stays in bounds, and PointNet ignores the order of points and learns the shapes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import QUIET

import zoo
from datamodules import ModelNetDataModule, ShapesPointCloudDataModule, read_off
from datamodules.pointcloud import SHAPES, PointAugmentation, sample_off, sample_shape
from recipes import shapes_pointnet
from zoo.pointnet import orthogonality_loss

N = 4000
ATOL = 1e-9

CUBE_VERTICES = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]  # index 4x + 2y + z (0/1 bits)
CUBE_QUADS = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
TETRA_VERTICES = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
TETRA_FACES = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]


def _write_off(path: Path, vertices, faces, header: str = "OFF\n{v} {f} 0\n", scale: float = 1.0) -> Path:
    lines = [f"{x * scale} {y * scale} {z * scale}" for x, y, z in vertices]
    lines += [f"{len(face)} {' '.join(map(str, face))}" for face in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header.format(v=len(vertices), f=len(faces)) + "\n".join(lines) + "\n")
    return path


def _shape(name: str, **params) -> torch.Tensor:
    return sample_shape(name, N, torch.Generator().manual_seed(1), **params)


# --- the generated shapes --------------------------------------------------------------------------------------------
def test_sphere_cube_and_octahedron_points_lie_on_their_surfaces():
    sphere = _shape("sphere")
    torch.testing.assert_close(sphere.norm(dim=1), torch.ones(N, dtype=torch.float64), atol=ATOL, rtol=0)
    assert sphere.mean(0).abs().max() < 0.05  # uniform over the sphere, not clustered
    cube = _shape("cube")
    assert cube.abs().amax(1).sub(1).abs().max() < ATOL and cube.abs().max() <= 1 + ATOL  # on a face, inside the box
    faces = (cube.abs().argmax(1) * 2 + (cube.gather(1, cube.abs().argmax(1, keepdim=True))[:, 0] > 0)).bincount()
    assert len(faces) == 6 and (faces / N - 1 / 6).abs().max() < 0.03  # the six faces alike
    octahedron = _shape("octahedron")
    torch.testing.assert_close(octahedron.abs().sum(1), torch.ones(N, dtype=torch.float64), atol=ATOL, rtol=0)


def test_cylinder_cone_and_capsule_points_lie_on_their_surfaces_by_area():
    cylinder = _shape("cylinder", height=2.0)  # radius 1: side area 4 pi, caps 2 pi
    rho, z = cylinder[:, :2].norm(dim=1), cylinder[:, 2]
    side = (rho - 1).abs() < ATOL
    assert ((z.abs() - 1).abs() < ATOL)[~side].all() and (rho[~side] <= 1 + ATOL).all() and (z.abs() <= 1).all()
    assert abs(side.double().mean().item() - 2 / 3) < 0.03
    cone = _shape("cone", height=2.0)  # apex at z = 1, base z = -1 of radius 1
    rho, z = cone[:, :2].norm(dim=1), cone[:, 2]
    base = (z + 1).abs() < ATOL
    assert ((rho - (1 - z) / 2).abs() < 1e-9)[~base].all() and (rho[base] <= 1 + ATOL).all()
    assert abs(base.double().mean().item() - 1 / (1 + math.sqrt(5))) < 0.03  # base pi / (pi + pi sqrt 5)
    capsule = _shape("capsule", length=2.0)  # distance 1 from the segment z in [-1, 1] of the axis
    axis = torch.stack([torch.zeros(N), torch.zeros(N), capsule[:, 2].clamp(-1, 1)], dim=1).double()
    torch.testing.assert_close((capsule - axis).norm(dim=1), torch.ones(N, dtype=torch.float64), atol=ATOL, rtol=0)


def test_torus_satisfies_its_equation_with_more_points_outside():
    torus = _shape("torus", minor=0.4)  # major radius 1
    rho, z = torus[:, :2].norm(dim=1), torus[:, 2]
    torch.testing.assert_close((rho - 1) ** 2 + z**2, torch.full((N,), 0.16, dtype=torch.float64), atol=1e-9, rtol=0)
    # the outer half has more area: (pi R + 2 r) / (2 pi R)
    assert abs((rho > 1).double().mean().item() - (0.5 + 0.4 / math.pi)) < 0.03


def test_pyramid_points_lie_on_its_base_or_sides():
    pyramid = _shape("pyramid", height=1.5)  # base 2x2 at z = -0.75, apex at z = 0.75
    z, reach = pyramid[:, 2], pyramid[:, :2].abs().amax(1)
    base = (z + 0.75).abs() < ATOL
    assert (reach[base] <= 1 + ATOL).all()
    torch.testing.assert_close(reach[~base], (0.75 - z[~base]) / 1.5, atol=1e-9, rtol=0)
    side_area = 4 * math.hypot(1.5, 1.0)  # four triangles of base 2 and slant height sqrt(1.5^2 + 1)
    assert abs(base.double().mean().item() - 4 / (4 + side_area)) < 0.03
    with pytest.raises(ValueError, match="Unknown shape 'blob'; choose from sphere, cube"):
        sample_shape("blob", 4)


# --- the datamodule ---------------------------------------------------------------------------------------------------
def _small_shapes(**kwargs) -> ShapesPointCloudDataModule:
    args = dict(num_points=128, num_train=4, num_val=2, num_test=3, batch_size=8, seed=5) | kwargs
    dm = ShapesPointCloudDataModule(**args)
    dm.setup()
    return dm


def test_shapes_datamodule_is_deterministic_normalized_and_labelled():
    dm = _small_shapes()
    assert dm.classes == list(SHAPES) and dm.num_classes == 8 and dm.num_points == 128
    assert {split: len(data) for split, data in dm.datasets.items()} == {"train": 32, "val": 16, "test": 24}
    test = dm.datasets["test"]
    assert test.targets.bincount().tolist() == [3] * 8 and test.points.shape == (24, 128, 3)
    assert test.points.mean(1).abs().max() < 1e-5  # centered
    torch.testing.assert_close(test.points.norm(dim=-1).amax(1), torch.ones(24), atol=1e-5, rtol=0)  # unit sphere
    for cloud in test.points[test.targets == dm.classes.index("sphere")].double():  # still on a sphere, of radius ~1
        design = torch.cat([2 * cloud, torch.ones(128, 1, dtype=torch.float64)], dim=1)  # |p|^2 = 2 p.c + r^2 - |c|^2
        solution = torch.linalg.lstsq(design, cloud.square().sum(1, keepdim=True)).solution[:, 0]
        center, radius = solution[:3], (solution[3] + solution[:3].square().sum()).sqrt()
        torch.testing.assert_close((cloud - center).norm(dim=1), radius.expand(128), atol=1e-5, rtol=0)
        assert center.norm() < 0.15 and 0.85 < radius <= 1
    again, other = _small_shapes(), _small_shapes(seed=6)
    assert torch.equal(again.datasets["test"].points, test.points)
    assert not torch.equal(other.datasets["test"].points, test.points)
    assert dm.preprocessing["classes"] == dm.classes and dm.preprocessing["num_points"] == 128
    with pytest.raises(ValueError, match="shapes must be two or more distinct names"):
        ShapesPointCloudDataModule(shapes=["sphere", "blob"])


def test_training_batches_are_augmented_within_bounds_and_evaluation_batches_are_not():
    dm = _small_shapes(scale=(0.8, 1.25), jitter_std=0.02, jitter_clip=0.05)
    points, targets = next(iter(dm.train_dataloader()))
    assert points.shape == (8, 128, 3) and points.dtype == torch.float32 and targets.shape == (8,)
    assert points.norm(dim=-1).max() <= 1.25 + 0.05 * math.sqrt(3) + 1e-6
    clean = dm.datasets["train"].points
    assert not any(torch.allclose(cloud, reference) for cloud in points for reference in clean)
    val_points, _ = next(iter(dm.val_dataloader()))
    torch.testing.assert_close(val_points, dm.datasets["val"].points[:8])
    clouds = clean[:8]
    up = PointAugmentation("up", (1.0, 1.0), 0.0)(clouds)  # about z only: heights and distances to z kept
    torch.testing.assert_close(up[..., 2], clouds[..., 2])
    torch.testing.assert_close(up[..., :2].norm(dim=-1), clouds[..., :2].norm(dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(up, clouds)
    any_axis = PointAugmentation("so3", (1.0, 1.0), 0.0)(clouds)
    torch.testing.assert_close(any_axis.norm(dim=-1), clouds.norm(dim=-1), atol=1e-5, rtol=0)
    assert not torch.allclose(any_axis[..., 2], clouds[..., 2], atol=1e-3)
    torch.testing.assert_close(PointAugmentation("none", (1.0, 1.0), 0.0)(clouds), clouds)
    jitter = PointAugmentation("none", (1.0, 1.0), 1.0, 0.05)(clouds) - clouds  # clipped to +-0.05
    assert jitter.abs().max() <= 0.05 + 1e-6 and (jitter.abs() > 0.049).float().mean() > 0.5


# --- OFF meshes and ModelNet -----------------------------------------------------------------------------------------
def test_off_reader_reads_both_headers_and_polygons_and_samples_on_the_faces(tmp_path):
    cube = _write_off(tmp_path / "cube.off", CUBE_VERTICES, CUBE_QUADS, header="# a cube\nOFF\n\n{v} {f} 0\n")
    vertices, triangles = read_off(cube)
    assert vertices.shape == (8, 3) and triangles.shape == (12, 3)  # six quads, two triangles each
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    assert torch.linalg.cross(b - a, c - a).norm(dim=1).sum() / 2 == pytest.approx(24.0)  # the whole surface
    points = sample_off(cube, 500, torch.Generator().manual_seed(0))
    assert (points.abs().amax(1) - 1).abs().max() < ATOL
    tetra = _write_off(tmp_path / "tetra.off", TETRA_VERTICES, TETRA_FACES, header="OFF{v} {f} 0\n")  # OFF4 4 0
    vertices, triangles = read_off(tetra)
    assert vertices.shape == (4, 3) and triangles.tolist() == [list(face) for face in TETRA_FACES]
    points = sample_off(tetra, 2000, torch.Generator().manual_seed(0))
    x, y, z = points.unbind(1)
    on_face = torch.stack([x.abs(), y.abs(), z.abs(), (x + y + z - 1).abs()]).amin(0)  # the four face planes
    assert on_face.max() < ATOL and points.min() >= -ATOL and (x + y + z).max() <= 1 + ATOL
    slanted = ((x + y + z - 1).abs() < ATOL).double().mean().item()  # by area: sqrt(3)/2 of 3/2 + sqrt(3)/2
    assert abs(slanted - math.sqrt(3) / (3 + math.sqrt(3))) < 0.03


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "expected the header 'OFF' on the first line, found 'an empty file'"),
        ("ply\n", "expected the header 'OFF' on the first line, found 'ply'"),
        ("OFF\n", "expected the counts 'vertices faces edges' after 'OFF'"),
        ("OFF\nthree 1 0\n", "line 2: expected the counts 'vertices faces edges', found 'three 1 0'"),
        ("OFF 3 1 0\n0 0 0\n1 0 0\n", "announces 3 vertices and 1 faces, but the file ends after 2 lines"),
        ("OFF 3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", "line 3: expected a vertex 'x y z', found '1 0'"),
        ("OFF 3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "line 5: expected a face 'n i1 ... in' with n >= 3"),
        ("OFF 3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", r"line 5: vertex indices must be in \[0, 2\]"),
        ("OFF 3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n", "every face has zero area"),
    ],
)
def test_broken_off_files_are_named_with_the_line_and_what_was_expected(tmp_path, text, expected):
    path = tmp_path / "broken.off"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"broken\.off.*{expected}"):
        sample_off(path, 10, torch.Generator())


def _modelnet_tree(root: Path) -> None:
    for split, count in (("train", 5), ("test", 2)):
        for index in range(count):
            scale = 1 + 0.2 * index
            _write_off(root / "cube" / split / f"cube_{index:04d}.off", CUBE_VERTICES, CUBE_QUADS, scale=scale)
            header = "OFF{v} {f} 0\n" if index % 2 else "OFF\n{v} {f} 0\n"  # both of ModelNet's header forms
            _write_off(root / "tetra" / split / f"tetra_{index:04d}.off", TETRA_VERTICES, TETRA_FACES, header, scale)


def test_modelnet_datamodule_reads_class_folders_of_off_files(tmp_path):
    _modelnet_tree(tmp_path)
    dm = ModelNetDataModule(str(tmp_path), num_points=64, val_fraction=0.2, batch_size=4)
    assert dm.classes == ["cube", "tetra"] and dm.num_classes == 2
    dm.setup()
    assert {split: len(data) for split, data in dm.datasets.items()} == {"train": 8, "val": 2, "test": 4}
    test = dm.datasets["test"]
    assert test.targets.tolist() == [0, 0, 1, 1] and test.points.shape == (4, 64, 3)
    torch.testing.assert_close(test.points.norm(dim=-1).amax(1), torch.ones(4), atol=1e-5, rtol=0)
    cubes = test.points[:2]  # normalized cubes: every point on a face of the box its points span
    low, high = cubes.amin(1, keepdim=True), cubes.amax(1, keepdim=True)  # (2, 1, 3)
    centered, half = cubes - (low + high) / 2, (high - low) / 2
    assert ((centered.abs() - half).abs().amin(-1) < 1e-5).all()
    torch.testing.assert_close(half.amax(-1), half.amin(-1))  # a cube: equal sides
    points, targets = next(iter(dm.train_dataloader()))
    assert points.shape == (4, 64, 3) and targets.shape == (4,)
    again = ModelNetDataModule(str(tmp_path), num_points=64, val_fraction=0.2)
    again.setup()
    assert torch.equal(again.datasets["test"].points, test.points)
    only = ModelNetDataModule(str(tmp_path), classes=["tetra", "cube"])
    assert only.classes == ["tetra", "cube"]


def test_modelnet_missing_folders_and_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No ModelNet data at .*nothing/: .*<class>/train/\*\.off"):
        ModelNetDataModule(str(tmp_path / "nothing")).setup()
    _modelnet_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"No class folder chair in .*; it has \['cube', 'tetra'\]"):
        ModelNetDataModule(str(tmp_path), classes=["cube", "chair"]).setup()
    for path in (tmp_path / "tetra" / "test").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"No \.off files in .*tetra/test/; expected tetra/test/\*\.off"):
        ModelNetDataModule(str(tmp_path)).setup()
    _modelnet_tree(tmp_path)
    (tmp_path / "cube" / "train" / "cube_0003.off").write_text("OFF\n8 6 0\n1 1 1\n")
    with pytest.raises(ValueError, match=r"cube_0003\.off: the header \(line 2\) announces 8 vertices"):
        ModelNetDataModule(str(tmp_path)).setup()


# --- PointNet --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature_transform", [0, 2])
def test_pointnet_output_does_not_depend_on_the_order_of_points(feature_transform):
    torch.manual_seed(0)
    model = zoo.PointNet(num_classes=5, point_dims=(16, 32, 64), head_dims=(32,), feature_transform=feature_transform)
    model.train()
    for _ in range(3):  # non-trivial BatchNorm statistics
        model(torch.randn(4, 50, 3))
    model.eval()
    x = torch.randn(3, 50, 3)
    permuted = x[:, torch.randperm(50)]
    torch.testing.assert_close(model.forward_features(permuted), model.forward_features(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(permuted), model(x), atol=1e-5, rtol=1e-5)
    assert model(x[:, :7]).shape == (3, 5)  # any number of points
    with pytest.raises(ValueError, match=r"PointNet expects float points of shape \(B, N, 3\).*\(3, 3, 50\)"):
        model(x.transpose(1, 2))


def test_transform_nets_start_at_the_identity_and_the_regularizer_is_in_the_training_loss():
    torch.manual_seed(0)
    model = zoo.create_model("pointnet_modelnet40", num_classes=4, num_points=64).train()
    x, target = model.example_batch(6, torch.Generator().manual_seed(0))
    eye = torch.eye(3).expand(6, 3, 3)
    torch.testing.assert_close(model.input_tnet(x.transpose(1, 2)), eye, atol=5e-3, rtol=0)
    rotation = torch.linalg.qr(torch.randn(3, 3))[0]
    assert orthogonality_loss(rotation.expand(2, 3, 3)) < 1e-10 and orthogonality_loss(2 * eye) == pytest.approx(27.0)
    torch.manual_seed(1)
    loss = model.batch_loss((x, target))
    torch.manual_seed(1)  # the same dropout mask
    features = model.points_before(torch.bmm(model.input_tnet(x.transpose(1, 2)), x.transpose(1, 2)))
    transforms = [model.input_tnet(x.transpose(1, 2)), model.feature_tnet(features)]
    expected = torch.nn.functional.cross_entropy(model(x), target) + 0.001 * sum(map(orthogonality_loss, transforms))
    torch.testing.assert_close(loss, expected)
    model.eval()
    torch.testing.assert_close(model.batch_loss((x, target)), torch.nn.functional.cross_entropy(model(x), target))


def test_pointnet_overfits_a_tiny_batch_of_generated_shapes():
    torch.manual_seed(0)
    dm = _small_shapes(num_points=64, num_train=2)
    points, targets = dm.datasets["train"].points, dm.datasets["train"].targets  # 16 clouds, 8 classes
    model = zoo.create_model("pointnet_shapes", num_points=64).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.batch_loss((points, targets))
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05
    assert (model.eval()(points).argmax(1) == targets).all()


@pytest.mark.slow
def test_recipe_classifies_the_generated_shapes():
    """`python -m recipes.shapes_pointnet fit` as shipped: the test accuracy the results page states."""
    cli = shapes_pointnet.main(["fit", *QUIET])
    assert isinstance(cli.model, zoo.PointNet) and cli.model.num_points == 256 and cli.model.num_classes == 8
    assert cli.trainer.callback_metrics["test/acc"] > 0.95
