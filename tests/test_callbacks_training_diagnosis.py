"""TrainingDiagnosis rules on synthetic histories (each rule firing and not firing), then on a real overfitting run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric

from callbacks import TrainingDiagnosis, diagnose
from callbacks.training_diagnosis import (
    find_divergence,
    find_generalization_gap,
    find_oscillation,
    find_overfitting,
    find_plateau,
    find_underfitting,
)

FALLING = [1.0, 0.8, 0.65, 0.55, 0.48, 0.43, 0.40, 0.38]
NAN = float("nan")


def names(findings) -> set[str]:
    return {f.name for f in findings}


@pytest.mark.parametrize(
    ("losses", "fires"),
    [
        ([1.0, 0.5, NAN], True),
        ([1.0, 0.5, math.inf], True),
        ([1.0, 0.2, 0.5, 2.5], True),  # 12.5x the minimum
        ([1.0, 0.2, 0.5, 1.9], False),  # 9.5x: bad but not diverged
        (FALLING, False),
    ],
)
def test_divergence(losses: list[float], fires: bool) -> None:
    finding = find_divergence(losses, factor=10.0)
    assert (finding is not None) == fires
    if fires:
        assert finding.name == "divergence" and finding.advice


@pytest.mark.parametrize(
    ("losses", "fires"),
    [
        ([1.0, 0.6, 1.1, 0.5, 1.0, 0.6, 1.05], True),  # up, down, up, down: going nowhere
        ([1.0, 0.8, 0.85, 0.6, 0.65, 0.4, 0.45], False),  # zig-zag but clearly descending
        (FALLING, False),
        ([1.0, 0.6, 1.1, 0.5], False),  # too few epochs to judge
    ],
)
def test_oscillation(losses: list[float], fires: bool) -> None:
    assert (find_oscillation(losses, min_epochs=5) is not None) == fires


@pytest.mark.parametrize(
    ("train", "val", "fires"),
    [
        (FALLING, [1.0, 0.8, 0.7, 0.66, 0.7, 0.75, 0.8, 0.86], True),  # best val at epoch 3, then 4 epochs up
        (FALLING, [1.0, 0.8, 0.7, 0.66, 0.64, 0.7, 0.75, 0.8], True),  # exactly 3 epochs since best
        (FALLING, [1.0, 0.8, 0.7, 0.66, 0.64, 0.63, 0.7, 0.75], False),  # only 2 epochs up
        (FALLING, [1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.47, 0.45], False),  # val keeps improving
        ([1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], [1.0, 0.9, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], False),  # both rise
    ],
)
def test_overfitting(train: list[float], val: list[float], fires: bool) -> None:
    assert (find_overfitting(train, val, patience=3) is not None) == fires


@pytest.mark.parametrize(
    ("train", "val", "fires"),
    [
        ([2.30, 2.29, 2.29, 2.28, 2.28], [2.31, 2.30, 2.30, 2.30, 2.29], True),  # chance level, flat
        ([2.30, 2.29, 2.29, 2.28, 2.28], None, True),
        ([2.30, 1.9, 1.6, 1.4, 1.3], [2.31, 2.0, 1.8, 1.7, 1.6], False),
        ([2.30, 2.29, 2.29, 2.28, 2.28], [2.31, 2.0, 1.8, 1.7, 1.6], False),  # val learned: not both flat
        ([2.30, 2.29], None, False),  # too short
    ],
)
def test_underfitting(train: list[float], val: list[float] | None, fires: bool) -> None:
    assert (find_underfitting(train, val, min_rel_improvement=0.1) is not None) == fires


@pytest.mark.parametrize(
    ("losses", "fires"),
    [
        ([1.0, 0.6, 0.5, 0.4999, 0.4998, 0.4999, 0.5], True),  # < 0.1% better in the last 4 epochs
        ([1.0, 0.6, 0.5, 0.45, 0.44, 0.43, 0.42], False),
        ([1.0, 0.6, 0.5, 0.5], False),  # not longer than the window
    ],
)
def test_plateau(losses: list[float], fires: bool) -> None:
    assert (find_plateau(losses, patience=4, tol=1e-3) is not None) == fires


@pytest.mark.parametrize(
    ("train", "val", "fires"),
    [([1.0, 0.5, 0.2], [1.0, 0.6, 0.4], True), ([1.0, 0.5, 0.3], [1.0, 0.6, 0.4], False), ([0.0], [0.3], False)],
)
def test_generalization_gap(train: list[float], val: list[float], fires: bool) -> None:
    assert (find_generalization_gap(train, val, max_ratio=1.5) is not None) == fires


def test_paired_rules_need_aligned_histories() -> None:
    with pytest.raises(ValueError, match="one value per epoch"):
        find_overfitting([1.0, 0.9], [1.0])


def test_diagnose_combines_and_suppresses() -> None:
    healthy_val = [1.05, 0.85, 0.7, 0.6, 0.53, 0.48, 0.45, 0.43]
    assert diagnose(FALLING, healthy_val) == []
    overfit = diagnose(FALLING, [1.0, 0.8, 0.7, 0.66, 0.7, 0.75, 0.8, 0.86])
    assert names(overfit) == {"overfitting", "generalization_gap"}  # no "plateau" on top of the overfitting
    assert names(diagnose([1.0, 0.5, NAN, 0.4], healthy_val[:4])) == {"divergence"}  # nothing else on NaN
    assert names(diagnose([2.3, 2.3, 2.29, 2.29, 2.29, 2.29, 2.29], [])) == {"underfitting"}


class Memorizer(L.LightningModule):
    """An MLP learning random labels by heart; logs ``train/loss`` in ``on_train_epoch_end`` as the zoo's tasks do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(20, 128), nn.ReLU(), nn.Linear(128, 4))
        self.train_loss = MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.train_loss.update(loss.detach())
        return loss

    def on_train_epoch_end(self):
        self.log("train/loss", self.train_loss)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.setdefault(trainer.current_epoch, []).append(float(outputs["loss"]))


def test_real_run_finds_overfitting(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(64, 20, generator=g), torch.randint(0, 4, (64,), generator=g))
    val = TensorDataset(torch.randn(64, 20, generator=g), torch.randint(0, 4, (64,), generator=g))
    diagnosis, steps, logger = TrainingDiagnosis(), StepLosses(), CSVLogger(tmp_path)
    trainer = L.Trainer(
        max_epochs=8,
        callbacks=[diagnosis, steps],
        logger=logger,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(Memorizer(), DataLoader(train, batch_size=16), DataLoader(val, batch_size=64))

    # The recorded train history is the per-epoch mean of the step losses, including the last epoch.
    assert sorted(diagnosis.history["train"]) == sorted(diagnosis.history["val"]) == list(range(8))
    for epoch, losses in steps.losses.items():
        assert diagnosis.history["train"][epoch] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert "overfitting" in names(diagnosis.findings)

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("diagnosis/") and v}
    assert logged["diagnosis/num_findings"] == len(diagnosis.findings)
    assert {f"diagnosis/{f.name}" for f in diagnosis.findings} <= logged.keys()

    # The history rides along in checkpoints.
    restored = TrainingDiagnosis()
    restored.load_state_dict(diagnosis.state_dict())
    assert restored.curves() == diagnosis.curves()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_keys": "train/loss"},
        {"val_keys": ()},
        {"overfit_patience": 0},
        {"plateau_tol": -1.0},
        {"divergence_factor": 1.0},
        {"gap_ratio": 0.5},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrainingDiagnosis(**kwargs)
