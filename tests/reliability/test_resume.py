"""A recipe killed with SIGKILL and resumed from last.ckpt ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recipes import digits_cnn

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 3
# Random augmentation in the main process (no workers): the generators' states matter, not only the weights.
RUN = [
    f"--trainer.max_epochs={EPOCHS}",
    "--data.init_args.augment=standard",
    "--data.init_args.num_workers=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--last_every_n_steps=5",
]


def _killed_run(save_dir: Path, step: int) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests" / "reliability"), str(ROOT)]))
    command = [
        sys.executable,
        "-m",
        "recipes.digits_cnn",
        "fit",
        *RUN,
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]
    command += ["--trainer.callbacks+=_faults.KillAt", f"--trainer.callbacks.step={step}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]  # killed, not finished


def _scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    cli = digits_cnn.main(["fit", *RUN, f"--trainer.logger.init_args.save_dir={save_dir}"])
    return cli, {k: v.clone() for k, v in cli.model.state_dict().items()}


@pytest.mark.parametrize("where", ["epoch_boundary", "mid_epoch"])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(uninterrupted, tmp_path: Path, where: str):
    reference, weights = uninterrupted
    steps_per_epoch = reference.trainer.num_training_batches
    # Right after the first epoch's last.ckpt; or inside the second epoch, a few steps after a step checkpoint.
    kill_step = steps_per_epoch if where == "epoch_boundary" else steps_per_epoch + 12
    _killed_run(tmp_path, kill_step)
    run_dir = tmp_path / "digits_cnn" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == (steps_per_epoch if where == "epoch_boundary" else kill_step // 5 * 5)
    assert where == "epoch_boundary" or saved["global_step"] % steps_per_epoch, "the test needs a mid-epoch checkpoint"

    resumed = digits_cnn.main(["fit", *RUN, f"--trainer.logger.init_args.save_dir={tmp_path}", f"--ckpt_path={last}"])

    assert resumed.trainer.global_step == reference.trainer.global_step == EPOCHS * steps_per_epoch
    for name in ("test/acc", "test/loss"):
        assert float(resumed.trainer.callback_metrics[name]) == float(reference.trainer.callback_metrics[name]), name
    final = resumed.model.state_dict()
    differ = [k for k, v in weights.items() if not torch.equal(final[k], v)]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"
    # One run folder: the resumed run logged into the interrupted run's version, after its first config.
    assert Path(resumed.trainer.logger.log_dir) == run_dir
    assert (run_dir / "config.yaml").is_file() and (run_dir / "config.resume-1.yaml").is_file()
    assert sorted(p.name for p in tmp_path.joinpath("digits_cnn").iterdir()) == ["version_0"]
    # Every epoch's values, from before and after the kill, in the one run folder.
    logged, expected = _scalars(run_dir), _scalars(Path(reference.trainer.logger.log_dir))
    for tag in ("val/acc", "val/loss", "train/loss", "train/acc", "test/acc"):
        assert logged[tag] == expected[tag], tag


def test_resuming_with_workers_warns_that_it_is_not_exact(uninterrupted, tmp_path: Path):
    reference, _ = uninterrupted
    last = Path(reference.trainer.logger.log_dir) / "checkpoints" / "last.ckpt"
    args = ["fit", *RUN, "--trainer.max_epochs=4", f"--ckpt_path={last}", "--data.init_args.num_workers=1"]
    with pytest.warns(UserWarning, match="worker processes draw their random augmentations"):
        digits_cnn.main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}", "--test_after_fit=false"])
