"""ActivationStatsMonitor on a network with three ReLU units that never fire, checked against a hand recomputation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import ActivationStatsMonitor
from tests.conftest import read_csv

DEAD_UNITS = 3
HIDDEN = 8


class DeadUnitNet(L.LightningModule):
    """Linear(4, 8) -> ReLU -> Linear(8, 6) -> Tanh -> Linear(6, 5) -> Sigmoid -> Linear(5, 1).

    The first three hidden units have bias -100: their pre-activation never gets near 0, so they never fire and,
    with a zero gradient through the ReLU, never recover. The others have bias +5 and always fire. The Tanh and
    Sigmoid layers get large weights so part of their outputs saturate.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Linear(4, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, 6),
            nn.Tanh(),
            nn.Linear(6, 5),
            nn.Sigmoid(),
            nn.Linear(5, 1),
        )
        with torch.no_grad():
            self.net[0].bias[:DEAD_UNITS] = -100.0
            self.net[0].bias[DEAD_UNITS:] = 5.0
            self.net[2].weight.mul_(3.0)
            self.net[4].weight.mul_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self(x), t)

    def validation_step(self, batch, batch_idx):
        x, t = batch
        self.log("val/loss", F.mse_loss(self(x), t))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class RecordBatches(L.Callback):
    """Keep each training batch, the weights it met, and whether any forward hook was live at its start."""

    def __init__(self) -> None:
        self.batches: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}
        self.hooked: dict[int, bool] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.batches[trainer.global_step] = (batch[0].clone(), state)
        self.hooked[trainer.global_step] = any(m._forward_hooks for m in pl_module.modules())


def by_hand(batches: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> dict[str, float]:
    outs: dict[str, list[torch.Tensor]] = {"net.1": [], "net.3": [], "net.5": []}
    for x, s in batches:
        h1 = F.linear(x, s["net.0.weight"], s["net.0.bias"]).clamp_min(0)
        h2 = torch.tanh(F.linear(h1, s["net.2.weight"], s["net.2.bias"]))
        h3 = torch.sigmoid(F.linear(h2, s["net.4.weight"], s["net.4.bias"]))
        for name, h in zip(outs, (h1, h2, h3), strict=True):
            outs[name].append(h)
    y = {name: torch.cat(hs).double() for name, hs in outs.items()}  # (window * B, units)
    expected = {}
    for name, h in y.items():
        expected[f"act/mean/{name}"] = h.mean().item()
        expected[f"act/std/{name}"] = h.std(unbiased=False).item()
    expected["act/dead_frac/net.1"] = 1.0 - (y["net.1"] > 0).any(dim=0).double().mean().item()
    expected["act/saturation_frac/net.3"] = (y["net.3"].abs() > 0.99).double().mean().item()
    sig = y["net.5"]
    expected["act/saturation_frac/net.5"] = ((sig < 0.01) | (sig > 0.99)).double().mean().item()
    return expected


def test_dead_fraction_saturation_and_moments(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(80, 4, generator=g), torch.randn(80, 1, generator=g)
    train = DataLoader(TensorDataset(x, t), batch_size=8)
    # Huge validation inputs would wake the dead units: validation forwards inside a window must not count.
    x_val, t_val = 1e4 * torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    val = DataLoader(TensorDataset(x_val, t_val), batch_size=8)

    monitor, record = ActivationStatsMonitor(every_n_steps=4, window=3), RecordBatches()
    logger = CSVLogger(tmp_path)
    model = DeadUnitNet()
    trainer = L.Trainer(
        max_steps=10,
        val_check_interval=2,
        num_sanity_val_steps=0,
        callbacks=[monitor, record],
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(model, train, val)

    logged = read_csv(logger.log_dir)
    act_keys = sorted(k for k in logged if k.startswith("act/"))
    for start in (0, 4):
        expected = by_hand([record.batches[s] for s in range(start, start + 3)])
        assert act_keys == sorted(expected)
        for key, value in expected.items():
            assert logged[key][start] == pytest.approx(value, rel=1e-5, abs=1e-9), (key, start)
        assert logged["act/dead_frac/net.1"][start] == DEAD_UNITS / HIDDEN
        assert 0 < logged["act/saturation_frac/net.3"][start] < 1
        assert 0 < logged["act/saturation_frac/net.5"][start] < 1
    # The window opened at step 8 was cut short by max_steps=10 and is dropped.
    assert all(sorted(logged[k]) == [0, 4] for k in act_keys)
    # Hooks live only inside windows, and none survive the fit.
    assert record.hooked == {s: s in (0, 1, 2, 4, 5, 6, 8, 9) for s in range(10)}
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"every_n_steps": 0},
        {"window": 0},
        {"every_n_steps": 5, "window": 6},
        {"module_types": []},
        {"module_types": [int]},
        {"tanh_saturation": 1.0},
        {"sigmoid_saturation": 0.5},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ActivationStatsMonitor(**kwargs)
