"""A recipe killed with SIGKILL and resumed from last.ckpt ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules import ResumableRandomSampler
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


def _finished_run(uninterrupted, tmp_path: Path) -> tuple[Path, int]:
    """A copy of the uninterrupted run's folder (resumes write into the checkpoint's folder), its last.ckpt and the
    epochs that holds."""
    run_dir = shutil.copytree(uninterrupted[0].trainer.logger.log_dir, tmp_path / "digits_cnn" / "version_0")
    last = run_dir / "checkpoints" / "last.ckpt"
    return last, torch.load(last, weights_only=True)["epoch"] + 1


@pytest.mark.parametrize("short_by", [0, 1])
def test_resuming_at_or_past_max_epochs_warns_that_nothing_is_trained(uninterrupted, tmp_path, short_by):
    last, epochs = _finished_run(uninterrupted, tmp_path)
    max_epochs = epochs - short_by
    args = ["fit", *RUN, f"--trainer.max_epochs={max_epochs}", f"--ckpt_path={last}", "--test_after_fit=false"]
    expected = rf"nothing was trained: .*last\.ckpt holds {epochs} epochs, which reaches this run's max_epochs="
    with pytest.warns(UserWarning, match=expected + rf"{max_epochs}\. Raise --trainer\.max_epochs above"):
        resumed = digits_cnn.main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    weights = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(resumed.model.state_dict()[key], value) for key, value in weights.items())


def test_resuming_far_past_max_epochs_is_a_one_line_error(uninterrupted, tmp_path, monkeypatch):
    last, _ = _finished_run(uninterrupted, tmp_path)
    args = ["fit", *RUN, "--trainer.max_epochs=1", f"--ckpt_path={last}"]
    monkeypatch.setattr(sys, "argv", ["digits_cnn", *args, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    with pytest.raises(SystemExit, match=r"^error: You restored a checkpoint with current_epoch=\d+, but you have set"):
        digits_cnn.main()


def test_a_mid_epoch_resume_with_another_batch_size_says_what_it_trains(tmp_path):
    """The epoch continues over its unseen samples in the same order; with a larger batch size the training loop
    (counting the batches already done) ends it early, and the warning gives the number of samples left out."""
    import lightning as L
    from conftest import quiet_trainer
    from torch.utils.data import TensorDataset

    from callbacks import ExactResume
    from datamodules.resumable import ResumableLoader

    class Recorder(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer, self.seen = torch.nn.Linear(1, 1), []

        def training_step(self, batch, batch_idx):
            self.seen += batch[0].flatten().tolist()
            return self.layer(batch[0].float()).sum()

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if self.trainer.global_step == 5 and not self.trainer.ckpt_path:
                self.trainer.save_checkpoint(tmp_path / "mid.ckpt")  # inside the first epoch, after 5 batches

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    def loader(batch_size: int) -> ResumableLoader:
        return ResumableLoader(TensorDataset(torch.arange(640).view(-1, 1)), batch_size=batch_size, shuffle=True)

    torch.manual_seed(0)
    first = Recorder()
    quiet_trainer(max_steps=7, callbacks=[ExactResume()]).fit(first, loader(32))
    before = set(first.seen[:160])  # the 5 batches of 32 in the checkpoint
    for batch_size, message, left_out in [
        (16, r"5 batches of 32 \(160 of 640 samples\); it continues over the other 480 .* every one of them", 0),
        (64, r"it continues over the other 480 .* ends the epoch after 5 batches: 160 samples of it are not", 160),
    ]:
        resumed = Recorder()
        with pytest.warns(UserWarning, match=message):
            quiet_trainer(max_epochs=1, callbacks=[ExactResume()]).fit(
                resumed, loader(batch_size), ckpt_path=tmp_path / "mid.ckpt"
            )
        assert not before & set(resumed.seen)  # nothing trained twice
        assert len(before | set(resumed.seen)) == 640 - left_out


def test_the_sampler_used_alone_draws_a_new_order_each_epoch():
    """Outside ResumableLoader the sampler is a RandomSampler: a fresh order per epoch from the global generator,
    and a seed given with set_epoch replays that order once (from ``skip``)."""
    sampler = ResumableRandomSampler(range(50))
    torch.manual_seed(0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    torch.manual_seed(0)
    assert list(sampler) == first  # the draws follow the global generator
    sampler.set_epoch(sampler.seed, skip=20)
    assert list(sampler) == first[20:]
    assert list(sampler) != first  # set_epoch holds for one iteration only
