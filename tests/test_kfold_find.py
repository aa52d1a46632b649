"""Folds in the datamodules, ``zoo kfold`` on the digits recipe, and the learning-rate and batch-size finders."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import QUIET
from PIL import Image
from sklearn.model_selection import KFold
from torch.utils.data import TensorDataset

from datamodules import DigitsDataModule, ImageFolderDataModule, TensorSplitsDataModule
from datamodules.base import fold_indices
from recipes.console import main
from recipes.tools.command import tool_parser
from recipes.tools.fitting import split_tool_args
from zoo.checkpoint import read_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(images: torch.Tensor, targets: torch.Tensor) -> Counter:
    """The (image, target) pairs of a split as a multiset."""
    return Counter(zip(map(bytes, images.flatten(1).numpy()), targets.tolist(), strict=True))


def _digits(num_folds: int = 0, fold: int = 0, seed: int = 42) -> DigitsDataModule:
    datamodule = DigitsDataModule(num_folds=num_folds, fold=fold, seed=seed)
    datamodule.setup()
    return datamodule


def test_digits_folds_partition_the_training_data_stratified_and_leave_the_test_split_alone():
    plain = _digits()
    pool = _rows(*DigitsDataModule().load_arrays(train=True))
    folds = [_digits(4, fold) for fold in range(4)]
    val_rows = Counter()
    for datamodule in folds:
        train, val = datamodule.datasets["train"], datamodule.datasets["val"]
        assert _rows(train.images, train.targets) + _rows(val.images, val.targets) == pool  # the rest trains
        val_rows += _rows(val.images, val.targets)
        assert torch.equal(datamodule.datasets["test"].images, plain.datasets["test"].images)
    assert val_rows == pool  # each training sample validates in exactly one fold
    counts = np.stack([np.bincount(dm.datasets["val"].targets.numpy(), minlength=10) for dm in folds])  # (fold, class)
    assert (counts.max(axis=0) - counts.min(axis=0)).max() <= 1
    again = _digits(4, 2)
    assert torch.equal(again.datasets["val"].images, folds[2].datasets["val"].images)
    other_seed = _digits(4, 2, seed=7)
    assert _rows(other_seed.datasets["val"].images, other_seed.datasets["val"].targets) != _rows(
        folds[2].datasets["val"].images, folds[2].datasets["val"].targets
    )


def test_fold_indices_use_kfold_without_class_targets():
    targets = torch.rand(11)  # regression targets: no classes to stratify
    for fold, (train, val) in enumerate(KFold(3, shuffle=True, random_state=5).split(np.zeros(11))):
        got_train, got_val = fold_indices(11, 3, fold, 5, targets)
        assert got_train.tolist() == train.tolist() and got_val.tolist() == val.tolist()


@pytest.mark.parametrize(
    ("num_folds", "fold", "message"),
    [(1, 0, "num_folds must be 0 .* got 1"), (-2, 0, "got -2"), (3, 3, r"\[0, 3\) .* got 3"), (0, 1, "fold=1")],
)
def test_bad_fold_options_are_refused_at_construction(num_folds, fold, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(num_folds=num_folds, fold=fold)


class _Tiny(TensorSplitsDataModule):
    """Sample ``i`` holds the value ``i``: ids 0-19 train, 20-24 validate, 25-29 test."""

    classes = ["even", "odd"]

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        x, y = torch.arange(30), torch.arange(30) % 2
        return {"train": (x[:20], y[:20]), "val": (x[20:25], y[20:25]), "test": (x[25:], y[25:])}

    def make_datasets(self, splits):
        return {split: TensorDataset(*tensors) for split, tensors in splits.items()}


def test_tensor_splits_folds_pool_train_and_val():
    val_ids = []
    for fold in range(5):
        datamodule = _Tiny(batch_size=4, seed=1, num_folds=5, fold=fold)
        datamodule.setup()
        train, val = (datamodule.datasets[split].tensors[0].tolist() for split in ("train", "val"))
        assert sorted(train + val) == list(range(25)) and len(val) == 5
        assert datamodule.datasets["test"].tensors[0].tolist() == list(range(25, 30))
        val_ids += val
    assert sorted(val_ids) == list(range(25))


def _image_tree(root: Path, per_class: int = 9) -> None:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.new("L", (4, 4), color=index * 20).save(root / name / f"{index}.png")


def test_image_folder_folds_split_the_pool_left_after_the_test_split(tmp_path):
    _image_tree(tmp_path / "pool")
    kwargs = dict(data_dir=str(tmp_path / "pool"), img_size=4, in_channels=1, mean=(0.5,), std=(0.5,))
    plain = ImageFolderDataModule(**kwargs)
    plain.setup()
    test = plain.datasets["test"].dataset.indices
    rest = sorted(set(range(18)) - set(test))
    val_ids = []
    for fold in range(3):
        datamodule = ImageFolderDataModule(**kwargs, num_folds=3, fold=fold)
        datamodule.setup()
        train, val = (datamodule.datasets[split].dataset.indices for split in ("train", "val"))
        assert sorted(train + val) == rest and datamodule.datasets["test"].dataset.indices == test
        val_ids += val
    assert sorted(val_ids) == rest
    _image_tree(tmp_path / "fixed" / "train")
    _image_tree(tmp_path / "fixed" / "val", per_class=2)
    fixed = ImageFolderDataModule(**{**kwargs, "data_dir": str(tmp_path / "fixed")}, num_folds=3)
    with pytest.raises(ValueError, match="fixed validation images"):
        fixed.setup()


def test_tool_flags_and_fit_arguments_are_told_apart():
    parser = tool_parser("kfold", "")
    parser.add_argument("--folds", type=int)
    tool, fit = split_tool_args(parser, ["--folds=3", "--trainer.max_epochs", "2", "--", "--config", "a.yaml"])
    assert tool == ["--folds=3"] and fit == ["--trainer.max_epochs", "2", "--config", "a.yaml"]


def _best_score(path: str, metric: str) -> float:
    """The best score the checkpoint callback monitoring ``metric`` stored in the checkpoint file ``path``."""
    states = read_checkpoint(path)["callbacks"]
    (score,) = [s["best_model_score"] for s in states.values() if "best_model_score" in s and s["monitor"] == metric]
    return float(score)


def test_kfold_trains_each_fold_in_its_own_run_and_reports_mean_and_sample_std(tmp_path, capsys):
    budget = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"]
    main(["kfold", "--recipe", "digits_cnn", "--folds", "3", "--output", "cv", *budget, *QUIET])
    report = json.loads((tmp_path / "cv" / "kfold.json").read_text())
    assert (report["metric"], report["mode"], report["num_folds"]) == ("val/acc", "max", 3)
    values = [fold["value"] for fold in report["folds"]]
    assert report["mean"] == pytest.approx(np.mean(values)) and report["std"] == pytest.approx(np.std(values, ddof=1))
    for index, fold in enumerate(report["folds"]):
        run = tmp_path / "cv" / f"fold_{index}"
        assert Path(fold["run_dir"]) == run.resolve()
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["data"]["init_args"]["fold"] == index and config["data"]["init_args"]["num_folds"] == 3
        assert config["test_after_fit"] is False
        assert Path(fold["best_checkpoint"]).parent == run.resolve() / "checkpoints"
        assert _best_score(fold["best_checkpoint"], "val/acc") == pytest.approx(fold["value"])
        assert read_checkpoint(fold["best_checkpoint"])["epoch"] == fold["best_epoch"] == 0
    out = capsys.readouterr().out
    assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in out and "fold_2" in out


def test_kfold_refuses_a_datamodule_without_folds(tmp_path):
    with pytest.raises(SystemExit, match="ShapesPointCloudDataModule has no fold support"):
        main(["kfold", "--folds", "2", "--", "--model", "pointnet_shapes", "--data", "ShapesPointCloud"])
    assert not (tmp_path / "logs").exists()


def test_lr_find_writes_the_curve_prints_a_suggestion_and_applies_nothing(tmp_path, capsys):
    found = main(
        ["lr-find", "--recipe", "digits_cnn", "--num_training", "16", "--min_lr", "1e-5", "--max_lr", "1", *QUIET]
    )
    out = capsys.readouterr().out
    flag = re.search(r"to try it: --model\.init_args\.lr (\S+)", out)
    assert flag and 1e-5 <= float(flag.group(1)) <= 1 and float(flag.group(1)) == pytest.approx(found.value, rel=5e-3)
    lrs, losses = np.array(found.curve.lrs[10:-1]), np.array(found.curve.losses[10:-1])  # Lightning's skips
    finite = np.isfinite(losses)
    slopes = np.gradient(losses[finite], np.log10(lrs[finite]))
    assert found.value == pytest.approx(lrs[finite][np.argmin(slopes)])  # steepest against log10(lr)
    assert found.cli.model.hparams.lr == 0.003  # the recipe's, not the suggestion
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["lr_find.png"]  # no .lr_find_*.ckpt, no logs
    with Image.open(tmp_path / "lr_find.png") as image:
        assert image.format == "PNG" and image.size == (640, 400)


def test_batch_size_find_doubles_from_the_configured_batch_size(tmp_path, capsys):
    found = main(["batch-size-find", "--recipe", "digits_cnn", "--max_trials", "2", "--steps_per_trial", "1", *QUIET])
    size = int(re.search(r"largest batch size that ran: (\d+)", capsys.readouterr().out).group(1))
    assert size == found.value and size >= 64 and size & (size - 1) == 0
    assert found.cli.datamodule.batch_size == found.cli.datamodule.hparams.batch_size == 64  # not applied
    assert list(tmp_path.rglob("*")) == []
