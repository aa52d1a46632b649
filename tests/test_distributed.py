"""DDP over 2 CPU processes (gloo), in real subprocesses: Lightning's ``ddp`` strategy re-launches the script.

Two claims: DDP on 2 ranks trains the same weights as 1 process fed the same global batches, and a recipe under DDP
decides the same on every rank (synced val/loss, so the same plateau steps and checkpoints) and counts every test
sample exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import QUIET

import zoo
from datamodules import DigitsDataModule

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"),
]


def _run(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), **env}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _train(tmp_path: Path, devices: int, batch_size: int, steps: int) -> dict[str, torch.Tensor]:
    out = tmp_path / f"weights_{devices}.pt"
    script = [sys.executable, str(TESTS / "_ddp_train.py"), f"--devices={devices}", f"--batch-size={batch_size}"]
    _run([*script, f"--steps={steps}", f"--out={out}"], cwd=tmp_path)
    return torch.load(out, weights_only=True)


def test_two_ranks_train_the_weights_of_one_process_with_the_same_global_batches(tmp_path):
    """2 ranks at batch 16 each = 1 process at batch 32, over 20 SGD steps (3+ epochs of an ordered set).

    DDP averages the two ranks' mean gradients, which is the mean over the global batch; only the order of the float
    additions differs. Measured: max abs weight difference 1.8e-7 (SGD; 9e-8 with AdamW) on weights of size ~1 that
    moved by ~0.3, against 0.24 when each rank takes 32 samples instead; hence the bound 1e-5.
    """
    from _ddp_train import build_model

    one = _train(tmp_path, devices=1, batch_size=32, steps=20)
    two = _train(tmp_path, devices=2, batch_size=16, steps=20)
    initial = build_model().state_dict()
    assert one.keys() == two.keys() == initial.keys()
    moved = max((one[k] - initial[k]).abs().max().item() for k in one)
    assert moved > 0.05, "training barely moved the weights: the comparison would prove nothing"
    difference = max((one[k] - two[k]).abs().max().item() for k in one)
    assert difference <= 1e-5, f"DDP weights differ from one process's by {difference:.3g}"


def _evaluate(model: torch.nn.Module, loader) -> tuple[int, float, int]:
    """Correct predictions, summed cross-entropy and sample count of ``loader``, in this one process."""
    correct, loss_sum, count = 0, 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            correct += int((logits.argmax(-1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            count += len(y)
    return correct, loss_sum, count


def test_digits_recipe_under_ddp_agrees_over_ranks_and_counts_every_test_sample_once(tmp_path):
    """`python -m recipes.digits_cnn fit` with DDP on 2 CPU processes, 3 epochs, a plateau schedule on val/loss.

    A probe callback writes what each rank saw: val/loss, val/acc, lr, the plateau scheduler's state, early
    stopping's counter and parameter/buffer checksums per epoch, then test/acc and test/loss. The ranks must agree
    exactly, and the reported test numbers must be those of the best checkpoint evaluated on every test sample once.
    """
    command = [
        sys.executable, "-m", "recipes.digits_cnn", "fit", "--trainer.strategy=ddp", "--trainer.devices=2",
        "--trainer.accelerator=cpu", "--trainer.max_epochs=3", "--model.init_args.scheduler=plateau",
        "--trainer.callbacks+=_ddp_probe.RankProbe", *QUIET,
    ]  # fmt: skip
    result = _run(command, cwd=tmp_path, DDP_PROBE_DIR=str(tmp_path / "probe"))
    assert "test/acc" in result.stdout  # test_after_fit ran
    assert "sync_dist=True" not in result.stderr  # every epoch-level value is synced (a Metric), none rank 0's alone

    zero, one = (json.loads((tmp_path / "probe" / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert (zero["rank"], one["rank"], zero["world_size"]) == (0, 1, 2)
    assert len(zero["val"]) == len(zero["train"]) == 3 and zero["test"] is not None
    for key in ("val", "train", "final_plateau", "final_lr", "best_model_score", "best_model_path", "test"):
        assert zero[key] == one[key], f"ranks disagree on {key}: {zero[key]} != {one[key]}"
    # The plateau schedule stepped on the synced val/loss (lr stays: 3 epochs < patience 5).
    assert zero["final_plateau"]["best"] == min(epoch["val/loss"] for epoch in zero["val"])

    data = DigitsDataModule()
    data.setup("fit")
    data.setup("test")
    num_val, num_test = len(data.datasets["val"]), len(data.datasets["test"])
    assert num_test == 359  # odd: padding to equal shards would count one sample twice
    assert zero["test_samples"] + one["test_samples"] == num_test
    assert all(a + b == num_val for a, b in zip(zero["val_samples"], one["val_samples"], strict=True))

    checkpoints = tmp_path / "logs" / "digits_cnn" / "version_0" / "checkpoints"
    best = [path for path in checkpoints.glob("*.ckpt") if path.name != "last.ckpt"]
    assert [path.name for path in best] == [zero["best_model_path"]]
    model = zoo.CNN.load_from_checkpoint(best[0], weights_only=True).eval()
    test = zero["test"]
    assert test["params"] == pytest.approx(sum(float(p.detach().double().sum()) for p in model.parameters()), rel=1e-12)

    correct, loss_sum, count = _evaluate(model, data.test_dataloader())
    assert count == num_test
    assert test["test/acc"] * num_test == pytest.approx(correct, abs=1e-3)
    assert test["test/loss"] == pytest.approx(loss_sum / num_test, rel=1e-5)
    # The checkpoint was chosen by a val/acc over every validation sample, computed with the saved weights.
    val_correct, _, val_count = _evaluate(model, data.val_dataloader())
    assert val_count == num_val and zero["best_model_score"] * num_val == pytest.approx(val_correct, abs=1e-3)
