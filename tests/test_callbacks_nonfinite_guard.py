"""NonFiniteGuard: NaN batches, NaN gradients, NaN parameters and poisoned BatchNorm statistics at known steps."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import NonFiniteError, NonFiniteGuard

BATCH = 4


class TwoLayer(L.LightningModule):
    """``l2(relu(l1(x)))`` with Adam; ``nan_grad_step``/``nan_param_step`` poison one tensor at that step."""

    def __init__(self, nan_grad_step: int = -1, nan_param_step: int = -1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 1)
        self.nan_grad_step, self.nan_param_step = nan_grad_step, nan_param_step

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self.l2(self.l1(x).relu()), t)

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == self.nan_param_step:
            with torch.no_grad():
                self.l2.bias.fill_(float("nan"))

    def on_after_backward(self):
        if self.global_step == self.nan_grad_step:
            self.l2.weight.grad[0, 0] = float("nan")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Snapshots(L.Callback):
    """Parameters before and after every step."""

    def __init__(self) -> None:
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}
        self._step = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step
        self.before[self._step] = {k: v.detach().clone() for k, v in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[self._step] = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


def loader(nan_batches: tuple[int, ...] = (), n_batches: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(BATCH * n_batches, 4, generator=g), torch.randn(BATCH * n_batches, 1, generator=g)
    for b in nan_batches:
        x[b * BATCH, 0] = float("nan")
    return DataLoader(TensorDataset(x, t), batch_size=BATCH)


def fit(
    tmp_path: Path,
    model: L.LightningModule,
    data: DataLoader,
    *callbacks: L.Callback,
    max_steps: int = 6,
    ckpt_path: Path | None = None,
    stops: bool = False,
) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=max_steps,
        callbacks=list(callbacks),
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if stops:  # a run the guard stopped ends with an error carrying the report
            with pytest.raises(NonFiniteError, match=r"Training stopped on non-finite values\. Non-finite values at"):
                trainer.fit(model, data, ckpt_path=ckpt_path)
        else:
            trainer.fit(model, data, ckpt_path=ckpt_path)
    trainer.guard_warnings = [str(w.message) for w in caught if str(w.message).startswith("Non-finite values")]
    assert trainer.guard_warnings, "the guard never fired"
    return trainer


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_skip_leaves_weights_and_adam_state_untouched(tmp_path: Path) -> None:
    guard, snaps, model = NonFiniteGuard(action="skip"), Snapshots(), TwoLayer()
    trainer = fit(tmp_path, model, loader(nan_batches=(3,)), guard, snaps)

    assert len(trainer.guard_warnings) == 1
    assert trainer.global_step == 6  # training went on after the bad batch
    assert same(snaps.before[3], snaps.after[3])
    assert all(not same(snaps.before[s], snaps.after[s]) for s in (0, 1, 2, 4, 5))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    optimizer = trainer.optimizers[0]
    for p in model.parameters():
        state = optimizer.state[p]
        assert int(state["step"]) == 5  # Adam advanced on the 5 good steps only
        assert torch.isfinite(state["exp_avg"]).all() and torch.isfinite(state["exp_avg_sq"]).all()
    assert guard.skipped_steps == 1
    assert "step 3" in guard.report and "loss=nan" in guard.report and "'l1.weight'" in guard.report


def test_skipped_count_survives_resume(tmp_path: Path) -> None:
    data = loader(nan_batches=(1,), n_batches=4)  # one bad batch per epoch
    guard = NonFiniteGuard(action="skip")
    trainer = fit(tmp_path, TwoLayer(), data, guard, max_steps=4)
    ckpt = tmp_path / "epoch0.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=False)["callbacks"][guard.state_key]["skipped_steps"] == 1

    resumed = NonFiniteGuard(action="skip")
    trainer = fit(tmp_path, TwoLayer(), data, resumed, max_steps=8, ckpt_path=ckpt)
    # The count restored from the checkpoint goes on.
    assert resumed.skipped_steps == 1 + len(trainer.guard_warnings)


def test_stop_names_the_first_bad_gradient(tmp_path: Path) -> None:
    guard, model = NonFiniteGuard(action="stop"), TwoLayer(nan_grad_step=2)
    trainer = fit(tmp_path, model, loader(), guard, stops=True)

    assert trainer.global_step == 3  # the update at step 2 was dropped, then the loop stopped
    assert guard.report.startswith("Non-finite values at step 2")
    assert "first non-finite gradient: 'l2.weight' (module 'l2')" in guard.report
    assert "first non-finite parameter: none" in guard.report
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert guard.skipped_steps == 0


def test_skip_escalates_to_stop_on_nonfinite_parameters(tmp_path: Path) -> None:
    guard = NonFiniteGuard(action="skip")
    trainer = fit(tmp_path, TwoLayer(nan_param_step=2), loader(), guard, stops=True)
    assert trainer.global_step == 3
    assert "first non-finite parameter: 'l2.bias'" in guard.report and "training stops" in guard.report
    assert guard.skipped_steps == 0


def test_max_consecutive_skips_stops(tmp_path: Path) -> None:
    guard = NonFiniteGuard(action="skip", max_consecutive_skips=2)
    trainer = fit(tmp_path, TwoLayer(), loader(nan_batches=(2, 3)), guard, stops=True)
    assert trainer.global_step == 4
    assert guard.skipped_steps == 1 and "training stops" in guard.report


def test_checkpoint_and_stop_saves_the_weights_before_the_bad_update(tmp_path: Path) -> None:
    guard, snaps = NonFiniteGuard(action="checkpoint_and_stop", dirpath=tmp_path / "nan"), Snapshots()
    trainer = fit(tmp_path, TwoLayer(), loader(nan_batches=(3,)), guard, snaps, stops=True)

    path = tmp_path / "nan" / "nonfinite-step=3.ckpt"
    assert guard.checkpoint_path == str(path) and path.is_file()
    assert trainer.global_step == 4
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["global_step"] == 3
    assert same(snaps.before[3], ckpt["state_dict"])
    assert str(path) in guard.report


def test_finite_training_is_untouched(tmp_path: Path) -> None:
    guard = NonFiniteGuard(action="stop")
    trainer = L.Trainer(
        max_steps=4,
        callbacks=[guard],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    trainer.fit(TwoLayer(), loader())
    assert trainer.global_step == 4 and guard.report is None and guard.skipped_steps == 0


class HugeGradients(TwoLayer):
    """Gradients of 1e30: finite, but their sum of squares overflows float32, so the fused norm check reads Inf."""

    def on_after_backward(self):
        for p in self.parameters():
            p.grad.fill_(1e30)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-32)  # steps of 0.01: the weights stay finite


def test_huge_finite_gradients_are_not_mistaken_for_nonfinite(tmp_path: Path) -> None:
    guard, snaps = NonFiniteGuard(action="stop"), Snapshots()
    trainer = L.Trainer(
        max_steps=3,
        callbacks=[guard, snaps],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accelerator="cpu",
    )
    model = HugeGradients()
    trainer.fit(model, loader())
    assert torch.isinf(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]))  # the fused check fires
    assert trainer.global_step == 3 and guard.report is None and guard.skipped_steps == 0
    assert not same(snaps.before[2], snaps.after[2])  # every update was applied


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "ignore"},
        {"check_inputs": False, "check_loss": False, "check_grads": False, "check_params": False},
        {"every_n_steps": 0},
        {"max_consecutive_skips": 0},
    ],
)
def test_invalid_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        NonFiniteGuard(**kwargs)


class BatchNormNet(TwoLayer):
    """``l2(relu(bn(l1(x))))``: a NaN input reaches BatchNorm's running statistics in the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(8)

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self.l2(self.bn(self.l1(x)).relu()), t)


class NormStats(L.Callback):
    """BatchNorm statistics after every step."""

    def __init__(self) -> None:
        self.after: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[batch_idx] = torch.cat([pl_module.bn.running_mean, pl_module.bn.running_var]).clone()


def test_nan_input_is_reported_and_batchnorm_statistics_restored(tmp_path: Path) -> None:
    guard, stats, snaps, model = NonFiniteGuard(action="skip"), NormStats(), Snapshots(), BatchNormNet()
    trainer = fit(tmp_path, model, loader(nan_batches=(3,)), guard, stats, snaps)

    assert trainer.global_step == 6 and guard.skipped_steps == 1
    assert "step 3 (epoch 0, batch 3)" in guard.report
    assert "first non-finite input: batch[0]: 1 of 16 values non-finite, first at (0, 0);" in guard.report
    assert "first non-finite normalization statistic: 'bn.running_mean' (module 'bn') (restored)" in guard.report
    assert torch.equal(stats.after[3], stats.after[2])  # the NaN forward pass left no trace in the statistics
    assert not torch.equal(stats.after[4], stats.after[3])  # the next batch updates them as usual
    assert same(snaps.before[3], snaps.after[3])
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_nonfinite_weights_are_never_checkpointed(tmp_path: Path) -> None:
    guard = NonFiniteGuard()
    trainer = L.Trainer(max_steps=1, callbacks=[guard], logger=False, enable_progress_bar=False, accelerator="cpu")
    model = BatchNormNet()
    trainer.fit(model, loader())
    trainer.save_checkpoint(tmp_path / "finite.ckpt")
    model.bn.running_var[2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"'bn.running_var' \(module 'bn'\) holds NaN/Inf"):
        trainer.save_checkpoint(tmp_path / "poisoned.ckpt")
    assert (tmp_path / "finite.ckpt").is_file() and not (tmp_path / "poisoned.ckpt").exists()


def test_raise_on_stop_false_returns(tmp_path: Path) -> None:
    guard = NonFiniteGuard(action="stop", raise_on_stop=False)
    trainer = fit(tmp_path, TwoLayer(), loader(nan_batches=(1,)), guard)
    assert trainer.global_step == 2 and guard.stopped and "first non-finite input: batch[0]" in guard.report


class MaskedInput(TwoLayer):
    """Reads its inputs through ``nan_to_num``: a NaN input never reaches the loss or the gradients."""

    def training_step(self, batch, batch_idx):
        x, t = batch
        return F.mse_loss(self.l2(self.l1(x.nan_to_num()).relu()), t)


def test_inputs_that_never_reach_the_loss_are_checked_only_on_request(tmp_path: Path) -> None:
    snaps = Snapshots()
    trainer = L.Trainer(max_steps=6, callbacks=[NonFiniteGuard(), snaps], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, accelerator="cpu")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a guard report is a UserWarning: the default guard stays quiet
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(MaskedInput(), loader(nan_batches=(3,)))
    assert not same(snaps.before[3], snaps.after[3])  # the harmless NaN cost no update

    guard, snaps = NonFiniteGuard(check_inputs=True), Snapshots()
    fit(tmp_path, MaskedInput(), loader(nan_batches=(3,)), guard, snaps)
    assert guard.skipped_steps == 1 and same(snaps.before[3], snaps.after[3])
    assert "first non-finite input: batch[0]: 1 of 16 values non-finite, first at (0, 0); loss=" in guard.report
    assert "first non-finite gradient: none" in guard.report
