"""Checkpoints survive kills and full disks: the old file stays whole under its name, orphans are cleared, and a run
that cannot write says where and how much."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import QUIET

from callbacks import AtomicCheckpointIO, CheckpointWriteError
from recipes import digits_cnn

REPO = Path(__file__).resolve().parents[2]


def _checkpoint(epoch: int) -> dict:
    return {"state_dict": {"w": torch.full((50_000,), float(epoch))}, "epoch": epoch}


def test_a_kill_while_a_checkpoint_is_written_leaves_the_old_one_and_the_next_write_clears_the_orphan(tmp_path):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1), target)
    before = target.read_bytes()
    script = f"""
import os, signal, torch
from callbacks import AtomicCheckpointIO
real = os.fsync
def die(fd):  # the new bytes are on disk, the rename has not happened: SIGKILL now
    real(fd)
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = die
AtomicCheckpointIO().save_checkpoint({{"state_dict": {{"w": torch.ones(50_000)}}, "epoch": 2}}, {str(target)!r})
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=REPO, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert target.read_bytes() == before  # whole: the old checkpoint, not a part of the new one
    assert torch.load(target, weights_only=True)["epoch"] == 1
    orphans = list(tmp_path.glob(".last.ckpt.*.tmp"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 100_000  # the killed write's whole temporary file
    AtomicCheckpointIO().save_checkpoint(_checkpoint(3), target)  # the next run writing into the folder
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.load(target, weights_only=True)["epoch"] == 3
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the usual mode, not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_no_room_for_a_checkpoint_changes_nothing_and_names_folder_and_bytes(tmp_path, monkeypatch):
    target = tmp_path / "epoch=001-val_acc=0.9514.ckpt"
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("Usage", (), {"free": 1_000})())
    with pytest.raises(CheckpointWriteError, match=rf"into {tmp_path}: it needs [\d,]+ bytes and 1,000 are free"):
        AtomicCheckpointIO().save_checkpoint(_checkpoint(1), target)
    assert list(tmp_path.iterdir()) == []  # no truncated file advertising the best accuracy


def _limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="no file-size limit on this platform")
def test_a_run_out_of_room_stops_with_a_message_and_keeps_its_checkpoints(tmp_path):
    """A file-size limit stands in for a full disk: the recipe's first run writes its checkpoints; resumed under a
    limit smaller than a checkpoint, it stops with exit 1 and a message naming the folder and the bytes needed, and
    the checkpoints of the first run are whole."""
    cli = digits_cnn.main(["fit", "--trainer.max_epochs=1", "--test_after_fit=false", *QUIET])
    folder = Path(cli.trainer.logger.log_dir) / "checkpoints"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert "last.ckpt" in before and len(before) == 2
    command = [sys.executable, "-m", "recipes.digits_cnn", "fit", f"--ckpt_path={folder / 'last.ckpt'}"]
    command += ["--trainer.max_epochs=3", *QUIET]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(200_000), check=False
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: cannot write ") and f"into {folder.resolve()} (File too large)" in last_line
    assert "bytes and" in last_line and "Traceback" not in result.stderr.split("error: cannot write")[-1]
    after = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert after == before  # nothing new, nothing damaged, no temporary file left
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 0
