"""GradientStatsMonitor against gradients derived by hand for a linear model with a mean-squared-error loss."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import GradientStatsMonitor
from tests.conftest import read_csv


class LinearRegression(L.LightningModule):
    """``y = x W^T + b`` with MSE; ``tiny`` gets a gradient of exactly ``1e-12`` per element."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 3)
        self.tiny = nn.Parameter(torch.ones(3))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, t = batch
        return nn.functional.mse_loss(self.net(x), t) + 1e-12 * self.tiny.sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class HandGradients(L.Callback):
    """Derive the expected norms from the batch and the weights before each step, without autograd."""

    def __init__(self) -> None:
        self.expected: dict[int, dict[str, float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, t = batch
        w, b = pl_module.net.weight.detach().clone(), pl_module.net.bias.detach().clone()
        r = x @ w.T + b - t  # (B, 3)
        dy = 2 * r / r.numel()  # d mean(r^2) / dy
        dw, db = dy.T @ x, dy.sum(0)  # (3, 4), (3,)
        dtiny = torch.full((3,), 1e-12)
        norms = {"net.weight": dw.norm().item(), "net.bias": db.norm().item(), "tiny": dtiny.norm().item()}
        weights = {"net.weight": w.norm().item(), "net.bias": b.norm().item(), "tiny": math.sqrt(3)}
        expected = {"grad/norm_total": math.sqrt(sum(v * v for v in norms.values()))}
        for name in norms:
            expected[f"grad/norm/{name}"] = norms[name]
            expected[f"grad/ratio/{name}"] = norms[name] / weights[name]
        self.expected[trainer.global_step] = expected


def data(n: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    t = x @ torch.randn(4, 3, generator=g) + 0.1 * torch.randn(n, 3, generator=g)
    return DataLoader(TensorDataset(x, t), batch_size=8)


def test_logged_norms_match_hand_computed_gradients(tmp_path: Path) -> None:
    hand = HandGradients()
    monitor = GradientStatsMonitor(every_n_steps=2, log_histograms=True, exploding_threshold=1e-3)
    csv_logger, tb_logger = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(
        max_steps=6,
        callbacks=[hand, monitor],
        logger=[csv_logger, tb_logger],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(LinearRegression(), data())

    logged = read_csv(csv_logger.log_dir)
    grad_keys = [k for k in logged if k.startswith("grad/")]
    assert sorted(grad_keys) == sorted(hand.expected[0])
    for key in grad_keys:
        assert sorted(logged[key]) == [0, 2, 4], key  # sampled steps only
        for step, value in logged[key].items():
            assert value == pytest.approx(hand.expected[step][key], rel=1e-5), (key, step)

    messages = [str(w.message) for w in caught]
    vanishing = [m for m in messages if m.startswith("Vanishing gradients")]
    exploding = [m for m in messages if m.startswith("Exploding gradients")]
    assert len(vanishing) == 1 and "tiny" in vanishing[0] and "net." not in vanishing[0]
    assert len(exploding) == 1 and "net.weight" in exploding[0] and "tiny" not in exploding[0]

    events = EventAccumulator(tb_logger.log_dir, size_guidance={"histograms": 0})
    events.Reload()
    assert {"grad/hist/net.weight", "grad/hist/net.bias", "grad/hist/tiny"} <= set(events.Tags()["histograms"])
    assert [e.step for e in events.Histograms("grad/hist/net.weight")] == [0, 2, 4]


def test_total_only_when_per_layer_is_off(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    trainer = L.Trainer(
        max_steps=2,
        callbacks=[GradientStatsMonitor(every_n_steps=1, per_layer=False, vanishing_threshold=0.0)],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(LinearRegression(), data())
    assert [k for k in read_csv(logger.log_dir) if k.startswith("grad/")] == ["grad/norm_total"]


@pytest.mark.parametrize(
    "kwargs",
    [{"every_n_steps": 0}, {"vanishing_threshold": -1.0}, {"vanishing_threshold": 1.0, "exploding_threshold": 1.0}],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GradientStatsMonitor(**kwargs)
