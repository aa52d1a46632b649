"""default_callbacks: the set every recipe starts from, run end to end on a tiny classifier."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import ExactResume, GradientStatsMonitor, NonFiniteGuard, default_callbacks


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_default_set_and_settings() -> None:
    checkpoint, last, early, guard, rng, lr, bar, grads = default_callbacks("val/loss", mode="min", patience=3)
    assert isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor == "val/loss" and checkpoint.mode == "min"
    assert last.monitor is None and last.save_top_k == 1 and not last.save_last
    assert isinstance(early, EarlyStopping) and early.monitor == "val/loss" and early.patience == 3
    assert isinstance(guard, NonFiniteGuard) and guard.action == "skip" and guard.every_n_steps == 1
    assert isinstance(rng, ExactResume)
    assert isinstance(lr, LearningRateMonitor) and lr.logging_interval == "step"
    assert isinstance(bar, RichProgressBar) and bar.refresh_rate < 100
    assert isinstance(grads, GradientStatsMonitor) and grads.every_n_steps == 50
    # The "/" of the metric must not turn into a folder in the checkpoint name.
    name = checkpoint.format_checkpoint_name({"epoch": torch.tensor(3), "val/loss": torch.tensor(0.25)})
    assert Path(name).name == "epoch=003-val_loss=0.2500.ckpt"


def test_default_callbacks_in_a_real_run(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x[:, 0] > 0).long()
    data = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=default_callbacks(),
        logger=CSVLogger(tmp_path),
        default_root_dir=tmp_path,
        accelerator="cpu",
        enable_model_summary=False,
    )
    trainer.fit(Classifier(), data, data)
    checkpoint = trainer.checkpoint_callback
    files = sorted(p.name for p in Path(checkpoint.dirpath).iterdir())
    best = Path(checkpoint.best_model_path).name
    assert "last.ckpt" in files and best in files
    assert best.startswith("epoch=") and f"val_acc={checkpoint.best_model_score:.4f}.ckpt" in best


@pytest.mark.parametrize("kwargs", [{"monitor": ""}, {"mode": "best"}, {"patience": -1}])
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        default_callbacks(**kwargs)
