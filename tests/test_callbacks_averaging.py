"""What Lightning's own weight averaging guarantees, on a small network with BatchNorm.

StochasticWeightAveraging: the final weights are the mean of the weights at the start of each SWA epoch, and the
BatchNorm statistics are recomputed for them over the training data; Lightning 2.6.6 breaks the first with a stale
optimizer step, which ``callbacks.averaging.StochasticWeightAveraging`` fixes. EMAWeightAveraging: validation runs
on the averaged weights, and checkpoints hold the averaged weights (the raw ones under ``current_model_state``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.callbacks import StochasticWeightAveraging as LightningSWA
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from callbacks.averaging import StochasticWeightAveraging


class BNNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self(x), t)

    def validation_step(self, batch, batch_idx):
        x, t = batch
        self.log("val/loss", F.mse_loss(self(x), t))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, 4, generator=g) + 1  # off-centre inputs: BN statistics far from (0, 1)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g))


def trainer(tmp_path: Path, callbacks: list[L.Callback], epochs: int) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        logger=False,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        accelerator="cpu",
        default_root_dir=tmp_path,
    )


class EpochStartWeights(L.Callback):
    """Parameters and BN buffers at each epoch start (listed before SWA, so before it touches them)."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.states[trainer.current_epoch] = copy.deepcopy(pl_module.state_dict())


@pytest.mark.parametrize(
    "swa_class",
    [
        StochasticWeightAveraging,
        pytest.param(
            LightningSWA,
            marks=pytest.mark.xfail(
                raises=AssertionError,
                strict=True,
                reason="Lightning's BN-update epoch applies the stale last gradient; if this passes, Lightning fixed "
                "it and callbacks/averaging.py can go",
            ),
        ),
    ],
    ids=["fixed", "lightning"],
)
def test_swa_averages_weights_and_recomputes_batchnorm_statistics(tmp_path: Path, swa_class: type) -> None:
    train = DataLoader(data(32, seed=0), batch_size=8)
    probe = EpochStartWeights()
    swa = swa_class(swa_lrs=0.05, swa_epoch_start=2, annealing_epochs=1)
    model = BNNet()
    trainer(tmp_path, [probe, swa], epochs=4).fit(model, train)

    # SWA averaged the weights seen at the start of epochs 1, 2, 3 (swa_epoch_start=2 is 1-based), then spent an
    # extra epoch (4) on BatchNorm statistics only.
    assert sorted(probe.states) == [0, 1, 2, 3, 4]
    for name, p in model.named_parameters():
        expected = torch.stack([probe.states[e][name] for e in (1, 2, 3)]).mean(0)
        torch.testing.assert_close(p.detach(), expected)

    # The BN statistics are exactly those of a fresh pass over the training data with the averaged weights.
    reference = copy.deepcopy(model)
    update_bn(train, reference)
    bn, ref_bn = model.net[1], reference.net[1]
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var)
    # ... and not the statistics the raw weights had left behind.
    raw_mean = probe.states[4]["net.1.running_mean"]
    assert not torch.allclose(bn.running_mean, raw_mean, atol=1e-3)


class AfterStepWeights(L.Callback):
    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append(copy.deepcopy(pl_module.state_dict()))


def hand_ema(states: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    ema = {k: v.clone() for k, v in states[0].items() if v.is_floating_point()}
    for state in states[1:]:
        for k in ema:
            ema[k] = decay * ema[k] + (1 - decay) * state[k]
    return ema


def val_loss(model: BNNet, state: dict[str, torch.Tensor], val: TensorDataset) -> float:
    model = copy.deepcopy(model)
    model.load_state_dict(state, strict=False)
    model.eval()
    x, t = val.tensors
    with torch.no_grad():
        return F.mse_loss(model(x), t).item()


def test_ema_validates_and_checkpoints_the_averaged_weights(tmp_path: Path) -> None:
    train, val = data(32, seed=0), data(16, seed=1)
    probe = AfterStepWeights()
    ema = EMAWeightAveraging(decay=0.8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model = BNNet()
    fit = trainer(tmp_path, [probe, ema, checkpoint], epochs=2)
    fit.fit(model, DataLoader(train, batch_size=8), DataLoader(val, batch_size=16))

    assert len(probe.states) == 8  # 2 epochs x 4 steps, EMA updated after every one
    expected = hand_ema(probe.states, decay=0.8)
    raw = {k: v for k, v in probe.states[-1].items() if v.is_floating_point()}
    assert max((expected[k] - raw[k]).abs().max().item() for k in raw) > 1e-2  # the average is not the raw model

    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    for k, v in expected.items():
        torch.testing.assert_close(saved["state_dict"][k], v)
        torch.testing.assert_close(saved["current_model_state"][k], raw[k])

    # The last validation ran on the averaged weights (BN buffers included), not on the raw ones.
    logged = fit.callback_metrics["val/loss"].item()
    assert abs(logged - val_loss(model, expected, val)) < 1e-5
    assert abs(logged - val_loss(model, raw, val)) > 1e-3

    # After fit the module holds the averaged weights.
    for k, v in expected.items():
        torch.testing.assert_close(model.state_dict()[k], v)
