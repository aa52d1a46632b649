"""3-d volumes: the generated solids have the volume and position they are given, splits are seeded and normalized with
the training split's statistics, the .npy folder reader reads files written here and names broken ones, and CNN3D
learns the shapes, alone and through the recipe's CLI, which links the data's sizes into the model."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import QUIET, quiet_trainer

import zoo
from datamodules import NpyVolumeFolderDataModule, ShapesVolumeDataModule
from datamodules.pointcloud import random_rotations
from datamodules.volumes import VOLUME_SHAPES, render_shape
from recipes import volumes_cnn3d

#: The solids' volumes at scale 1 (see VOLUME_SHAPES); the cross is three bars of 0.5 less their shared cubes.
SOLID_VOLUMES = {
    "ball": 4 / 3 * math.pi,
    "cube": 1.5**3,
    "cylinder": math.pi * 0.7**2 * 1.6,
    "shell": 4 / 3 * math.pi * (1 - 0.6**3),
    "cross": 3 * 0.5 - 3 * 0.125 + 0.125,
    "torus": 2 * math.pi**2 * 0.7 * 0.3**2,
}
DATA_LINKS = {"num_classes", "in_channels", "img_size", "volume_depth"}


def _split(dm, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split as the loaders give it: normalized volumes and targets, in order."""
    dataset = dm.datasets[split]
    return dataset.__getitems__(range(len(dataset)))


# --- generated shapes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(VOLUME_SHAPES))
def test_rendered_solid_has_its_volume_and_center_in_any_orientation(name):
    size, scale, center = 24, 0.5, (0.2, -0.1, 0.15)  # x, y, z: the W, H and D axes
    rotation = random_rotations(1, torch.Generator().manual_seed(0))[0]
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) * 2 / size - 1
    for turn in (None, rotation):
        volume = render_shape(name, size, center, scale, turn).double()
        assert volume.shape == (size, size, size) and volume.min() >= 0 and volume.max() <= 1
        solid = volume.sum().item() * (2 / size) ** 3
        assert solid == pytest.approx(SOLID_VOLUMES[name] * scale**3, rel=0.05)
        weights = volume / volume.sum()
        centroid = [(weights.sum(dims) * axis).sum().item() for dims in ((0, 1), (0, 2), (1, 2))]  # x, y, z
        assert centroid == pytest.approx(center, abs=0.01)
    hollow = render_shape(name, size, scale=0.5)[size // 2, size // 2, size // 2].item() == 0
    assert hollow == (name in ("shell", "torus"))
    with pytest.raises(ValueError, match="Unknown shape 'blob'; choose from ball, cube"):
        render_shape("blob", 8)


def _shapes(**kwargs) -> ShapesVolumeDataModule:
    args = dict(size=8, num_train=5, num_val=2, num_test=3, batch_size=4, seed=3) | kwargs
    dm = ShapesVolumeDataModule(**args)
    dm.setup()
    return dm


def test_generated_splits_are_seeded_labelled_and_normalized_with_training_statistics():
    dm = _shapes()
    assert dm.classes == list(VOLUME_SHAPES) and dm.num_classes == 6
    for split, count in (("train", 5), ("val", 2), ("test", 3)):
        raw = dm.datasets[split].volumes
        assert raw.shape == (6 * count, 1, 8, 8, 8) and raw.dtype == torch.float32
        assert raw.min() >= 0 and raw.max() <= 1  # noisy, clipped to [0, 1]
        assert dm.datasets[split].targets.bincount().tolist() == [count] * 6  # every class in every split
    volumes, targets = next(iter(dm.train_dataloader()))
    assert volumes.shape == (4, 1, 8, 8, 8) and volumes.dtype == torch.float32
    assert targets.shape == (4,) and targets.dtype == torch.int64
    raw = dm.datasets["train"].volumes.double()
    assert dm.mean == pytest.approx((raw.mean().item(),)) and dm.std == pytest.approx((raw.std(correction=0).item(),))
    train = torch.cat([volumes for volumes, _ in dm.train_dataloader()]).double()  # the loader's whole epoch
    assert train.shape == (30, 1, 8, 8, 8)
    assert abs(train.mean().item()) < 1e-5 and train.std(correction=0).item() == pytest.approx(1, abs=1e-5)
    val, _ = _split(dm, "val")  # normalized with the training statistics, not its own
    torch.testing.assert_close(val, (dm.datasets["val"].volumes - dm.mean[0]) / dm.std[0])
    again, other = _shapes(), _shapes(seed=4)
    for split in ("train", "val", "test"):
        assert torch.equal(again.datasets[split].volumes, dm.datasets[split].volumes)
        assert torch.equal(again.datasets[split].targets, dm.datasets[split].targets)
        assert not torch.equal(other.datasets[split].volumes, dm.datasets[split].volumes)
    assert _shapes(shapes=["torus", "ball"]).classes == ["torus", "ball"]
    with pytest.raises(ValueError, match="shapes must be two or more distinct names of ball, cube"):
        ShapesVolumeDataModule(shapes=["ball", "blob"])
    with pytest.raises(ValueError, match=r"scale must be a range in \(0, 0\.770\)"):
        ShapesVolumeDataModule(scale=(0.5, 0.8))


def test_data_links_are_the_sizes_cnn3d_takes():
    dm = _shapes(size=10)
    assert set(zoo.CNN3D.data_links) == DATA_LINKS
    sizes = {key: getattr(dm, key) for key in zoo.CNN3D.data_links}
    assert sizes == {"num_classes": 6, "in_channels": 1, "img_size": (10, 10), "volume_depth": 10}
    model = zoo.CNN3D(**sizes, channels=(4, 8))
    assert tuple(model.example_input_array.shape) == (2, 1, 10, 10, 10)
    volumes, _ = next(iter(dm.val_dataloader()))
    assert model(volumes).shape == (4, 6)
    preprocessing = dm.preprocessing
    assert preprocessing["img_size"] == [10, 10] and preprocessing["volume_depth"] == 10
    assert preprocessing["mean"] == list(dm.mean) and preprocessing["classes"] == dm.classes


# --- .npy folders ----------------------------------------------------------------------------------------------------
def _npy_tree(root: Path, shape=(4, 5, 6), dtype=np.uint8, per_class: int = 3, classes=("a", "b")) -> list[Path]:
    """``root/<class>/<i>.npy`` arrays whose first voxel is their file number (to find them after the split)."""
    rng, paths = np.random.default_rng(0), []
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for _ in range(per_class):
            if np.dtype(dtype) == np.uint8:
                array = rng.integers(0, 256, shape, dtype=np.uint8)
            else:  # channels of different offsets and scales
                offsets = np.arange(shape[0]).reshape(-1, *[1] * (len(shape) - 1)) if len(shape) == 4 else 0
                array = (rng.normal(size=shape) * (1 + 9 * offsets) + 5 * offsets).astype(dtype)
            array.flat[0] = len(paths)
            paths.append(root / name / f"{len(paths)}.npy")
            np.save(paths[-1], array)
    return paths


def test_npy_folder_reads_uint8_volumes_scaled_to_unit_range(tmp_path):
    paths = _npy_tree(tmp_path, per_class=10)
    dm = NpyVolumeFolderDataModule(str(tmp_path), val_fraction=0.25, test_fraction=0.2, batch_size=4)
    assert dm.classes == ["a", "b"] and dm.num_classes == 2
    assert (dm.in_channels, dm.volume_depth, dm.img_size) == (1, 4, (5, 6))
    dm.setup()
    assert {split: len(data) for split, data in dm.datasets.items()} == {"train": 12, "val": 4, "test": 4}
    found = {}
    for split, dataset in dm.datasets.items():
        for volume, target in zip(dataset.volumes, dataset.targets, strict=True):
            found[round(volume.flatten()[0].item() * 255)] = (volume, int(target), split)
    assert sorted(found) == list(range(20))  # every file once, in one split
    for number, path in enumerate(paths):
        volume, target, _ = found[number]
        assert target == dm.classes.index(path.parent.name) and volume.dtype == torch.float32
        torch.testing.assert_close(volume, torch.from_numpy(np.load(path)).float().div(255).unsqueeze(0))
    train, _ = _split(dm, "train")
    assert abs(train.mean().item()) < 1e-5 and train.std(correction=0).item() == pytest.approx(1, abs=1e-5)
    again = NpyVolumeFolderDataModule(str(tmp_path), val_fraction=0.25, test_fraction=0.2)
    again.setup()
    other = NpyVolumeFolderDataModule(str(tmp_path), val_fraction=0.25, test_fraction=0.2, seed=1)
    other.setup()
    assert torch.equal(again.datasets["test"].volumes, dm.datasets["test"].volumes)
    assert not torch.equal(other.datasets["test"].volumes, dm.datasets["test"].volumes)


def test_npy_folder_keeps_float32_channels_and_normalizes_each(tmp_path):
    paths = _npy_tree(tmp_path, shape=(2, 3, 4, 5), dtype=np.float32, per_class=4, classes=("ct", "mri", "pet"))
    dm = NpyVolumeFolderDataModule(str(tmp_path), val_fraction=0.0, test_fraction=0.0, batch_size=4)
    assert {key: getattr(dm, key) for key in DATA_LINKS} == {
        "num_classes": 3,
        "in_channels": 2,
        "img_size": (4, 5),
        "volume_depth": 3,
    }
    dm.setup()
    raw, targets = dm.datasets["train"].volumes, dm.datasets["train"].targets
    assert raw.shape == (12, 2, 3, 4, 5) and targets.bincount().tolist() == [4, 4, 4]
    for volume, target in zip(raw, targets, strict=True):  # the values as saved, not scaled
        number = round(volume.flatten()[0].item())
        assert torch.equal(volume, torch.from_numpy(np.load(paths[number])))
        assert target == number // 4
    channels = raw.transpose(0, 1).flatten(1).double()  # (C, M * D * H * W)
    assert dm.mean == pytest.approx(channels.mean(1).tolist()) and dm.std[1] > 5 * dm.std[0]
    train, _ = _split(dm, "train")
    per_channel = train.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(2), atol=1e-5, rtol=0)


def test_npy_folder_missing_folder_and_class_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No volume folder at .*nothing/; put one folder of \.npy volumes"):
        NpyVolumeFolderDataModule(str(tmp_path / "nothing")).setup()
    _npy_tree(tmp_path / "one", classes=("a",))
    with pytest.raises(FileNotFoundError, match=r"one/ holds 1 class folder\(s\) \['a'\]; a classifier needs at least"):
        NpyVolumeFolderDataModule(str(tmp_path / "one")).setup()
    _npy_tree(tmp_path / "two")
    (tmp_path / "two" / "empty").mkdir()
    (tmp_path / "two" / "empty" / "notes.txt").write_text("not a volume")
    with pytest.raises(FileNotFoundError, match=r"No \.npy files in .*two/empty/; put one folder"):
        NpyVolumeFolderDataModule(str(tmp_path / "two")).setup()


def _truncated(path: Path) -> None:
    np.save(path, np.zeros((4, 5, 6), np.uint8))
    path.write_bytes(path.read_bytes()[:-20])


def _npz(path: Path) -> None:
    with open(path, "wb") as file:
        np.savez(file, volume=np.zeros((4, 5, 6), np.uint8))


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (lambda p: p.write_bytes(b"garbage, not an array"), r"is not an \.npy file: it starts with b'garbag'"),
        (lambda p: p.write_bytes(b""), r"is not an \.npy file: it starts with b''"),
        (_npz, r"is not an \.npy file: it starts with b'PK"),
        (_truncated, r"is not a readable \.npy array of numbers \(np\.load: "),
        (
            lambda p: np.save(p, np.array([{"volume": 1}, None], dtype=object), allow_pickle=True),
            r"is not a readable \.npy array of numbers \(np\.load: .*[Oo]bject",
        ),
        (lambda p: np.save(p, np.zeros((4, 5, 7))), r"holds an array of shape \(4, 5, 7\); every volume must have"),
        (lambda p: np.save(p, np.zeros((5, 6))), r"holds an array of shape \(5, 6\); expected a volume \(D, H, W\)"),
        (lambda p: np.save(p, np.array(["a", "b"])), r"holds <U1 values; volumes must be numbers"),
        (lambda p: np.save(p, np.full((4, 5, 6), np.nan)), r"holds NaN or infinite values"),
    ],
    ids=["garbage", "empty", "npz", "truncated", "objects", "shape", "2d", "strings", "nan"],
)
@pytest.mark.parametrize("first", [False, True], ids=["last", "first"])
def test_npy_folder_broken_file_is_named(tmp_path, write, expected, first):
    """A broken file stops setup, before training, with its path and what is wrong; as the first file it is also the
    one whose header gives the expected shape."""
    _npy_tree(tmp_path)
    path = tmp_path / ("a/0.npy" if first else "b/zz.npy")
    write(path)
    if first and "every volume must have" in expected:  # the first file sets the shape: the others disagree
        path, expected = tmp_path / "a/1.npy", r"holds an array of shape \(4, 5, 6\); every volume must have"
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + expected):
        NpyVolumeFolderDataModule(str(tmp_path), batch_size=2).setup()


# --- training --------------------------------------------------------------------------------------------------------
def test_cnn3d_learns_the_generated_shapes():
    torch.manual_seed(0)
    shapes = ["ball", "cube", "cross"]
    dm = _shapes(size=10, num_train=12, num_val=4, num_test=20, batch_size=8, seed=0, shapes=shapes, scale=(0.5, 0.6))
    model = zoo.CNN3D(num_classes=3, in_channels=1, img_size=10, volume_depth=10, channels=(8, 16, 32), lr=3e-3)
    volumes, targets = _split(dm, "train")
    with torch.no_grad():
        before = F.cross_entropy(model.eval()(volumes), targets).item()
    trainer = quiet_trainer(max_epochs=8)
    trainer.fit(model.train(), dm)
    with torch.no_grad():
        logits = model.eval()(volumes)
    assert F.cross_entropy(logits, targets).item() < min(0.6, before - 0.4)  # chance: ln 3 = 1.10
    assert (logits.argmax(1) == targets).float().mean() > 0.85
    assert trainer.test(model, dm, verbose=False)[0]["test/acc"] > 0.5  # 60 unseen volumes; chance: 1/3


def test_recipe_runs_and_links_the_data_sizes_into_the_model(tmp_path):
    """`python -m recipes.volumes_cnn3d fit` under fast_dev_run; the model's sizes come from whichever datamodule."""
    small = ["--data.init_args.num_train=8", "--data.init_args.num_val=2", "--data.init_args.num_test=2"]
    cli = volumes_cnn3d.main(["fit", "--trainer.fast_dev_run=2", *QUIET, *small])  # tests/test_recipes.py: as shipped
    model = cli.model
    assert isinstance(model, zoo.CNN3D) and isinstance(cli.datamodule, ShapesVolumeDataModule)
    assert (model.num_classes, model.in_channels, model.img_size, model.volume_depth) == (6, 1, (16, 16), 16)
    assert cli.trainer.state.finished and "test/acc" in cli.trainer.callback_metrics
    _npy_tree(tmp_path / "volumes", shape=(2, 5, 6, 7), classes=("a", "b", "c"), per_class=4)
    data = ["--data=datamodules.NpyVolumeFolderDataModule", f"--data.init_args.data_dir={tmp_path / 'volumes'}"]
    cli = volumes_cnn3d.main(["fit", "--trainer.fast_dev_run=1", *QUIET, *data, "--data.init_args.batch_size=4"])
    model = cli.model
    assert (model.num_classes, model.in_channels, model.img_size, model.volume_depth) == (3, 2, (6, 7), 5)
    assert tuple(model.example_input_array.shape) == (2, 2, 5, 6, 7)
    with pytest.raises(ValueError, match=r"volume_depth=20 disagrees with the data: .* has volume_depth=16"):
        volumes_cnn3d.main(["fit", "--trainer.fast_dev_run=1", *QUIET, "--model.init_args.volume_depth=20"])
