"""NaN in a recipe run: the default callbacks drop the bad update, keep checkpoints finite and fail loudly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET, quiet_trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from callbacks import NonFiniteError, NonFiniteGuard
from recipes import digits_cnn

ROOT = Path(__file__).resolve().parents[2]


def _finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_a_nan_batch_costs_one_update_and_nothing_else():
    cli = digits_cnn.main(["fit", "--trainer.max_epochs=2", "--trainer.callbacks+=_faults.PoisonBatch", *QUIET])
    guard = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "NonFiniteGuard")
    assert guard.skipped_steps == 1 and guard.report.startswith("Non-finite values at step 5 (epoch 0, batch 5)")
    assert "first non-finite input: batch[0]: 1 of" in guard.report
    assert "running_mean" in guard.report and "(restored)" in guard.report  # the cnn's BatchNorm saw the NaN
    folder = Path(cli.trainer.logger.log_dir) / "checkpoints"
    assert all(_finite(path) for path in folder.glob("*.ckpt")) and (folder / "last.ckpt").is_file()
    assert cli.trainer.callback_metrics["test/acc"] > 0.9  # chance is 0.1: the statistics were not poisoned


def test_a_run_whose_weights_go_nonfinite_exits_nonzero_and_writes_no_nan_checkpoint(tmp_path: Path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "reliability"), str(ROOT)]))
    command = [
        sys.executable,
        "-m",
        "recipes.digits_cnn",
        "fit",
        "--trainer.max_epochs=3",
        "--trainer.callbacks+=_faults.PoisonWeights",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        *QUIET,
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # the guard's report as the command's error, no traceback
    assert last.startswith("error: ") and "first non-finite parameter: '" in result.stderr
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert all(_finite(path) for path in checkpoints)


def test_a_diverged_run_ends_with_an_error_and_no_checkpoint_named_after_a_nan(tmp_path, monkeypatch):
    """lr 1000: the weights stay finite but huge and every loss is NaN; the run must not end as a success."""
    from recipes import forecast_sunspots

    monkeypatch.chdir(tmp_path)
    with pytest.raises(NonFiniteError, match=r"validation metric val/mae is (nan|inf) after epoch 0: .* not finite"):
        forecast_sunspots.main(["fit", "--model.init_args.lr=1000", "--trainer.max_epochs=3", *QUIET])
    names = [path.name for path in tmp_path.rglob("*.ckpt")]
    assert not any("inf" in name or "nan" in name for name in names), names


class _AlwaysNaN(BoringModel):
    def training_step(self, batch, batch_idx):
        return {"loss": super().training_step(batch, batch_idx)["loss"] * float("nan")}


def test_an_epoch_whose_every_update_was_skipped_stops_the_run():
    """Five steps an epoch, all NaN: fewer than max_consecutive_skips, and still no epoch may pass as trained."""
    guard = NonFiniteGuard(action="skip", max_consecutive_skips=20)
    trainer = quiet_trainer(max_epochs=3, limit_train_batches=5, limit_val_batches=0, callbacks=[guard])
    with (
        pytest.warns(UserWarning),
        pytest.raises(NonFiniteError, match="Every one of the 5 checked updates of epoch 0"),
    ):
        trainer.fit(_AlwaysNaN())
    assert trainer.current_epoch == 1 and guard.skipped_steps == 5
