"""Runs never share a folder: two started at once into one logs folder each claim their own version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml
from conftest import QUIET

from recipes.runs import next_version_dir

REPO = Path(__file__).resolve().parents[2]


def test_concurrent_claims_get_distinct_folders(tmp_path):
    with ProcessPoolExecutor(max_workers=8) as pool:
        claimed = list(pool.map(next_version_dir, [str(tmp_path)] * 16))
    assert {Path(path).name for path in claimed} == {f"version_{n}" for n in range(16)}  # 16 claims, 16 folders


def test_two_recipe_runs_started_at_once_write_into_two_folders(tmp_path):
    """Each run has its own config, its own last.ckpt and its own events, and both exit 0."""
    command = [sys.executable, "-m", "recipes.digits_cnn", "fit", "--trainer.max_epochs=1", "--test_after_fit=false"]
    runs = [
        subprocess.Popen([*command, *QUIET, f"--model.init_args.lr={lr}"], cwd=tmp_path, stderr=subprocess.PIPE)
        for lr in (0.001, 0.002)
    ]
    for run in runs:
        assert run.wait(timeout=300) == 0, run.stderr.read().decode()[-3000:]
    folders = sorted((tmp_path / "logs" / "digits_cnn").iterdir())
    assert [folder.name for folder in folders] == ["version_0", "version_1"]
    rates = set()
    for folder in folders:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        rates.add(config["model"]["init_args"]["lr"])
        assert (folder / "checkpoints" / "last.ckpt").is_file() and len(list(folder.glob("events.out.*"))) == 1
        assert not list(folder.glob("config.resume-*"))
    assert rates == {0.001, 0.002}  # each folder describes the run that wrote it


def test_a_run_resumes_from_a_moved_folder_and_another_working_directory(tmp_path, monkeypatch):
    """The logs folder moves and the resume starts elsewhere: the run continues in the folder that holds its
    checkpoint, keeps its best checkpoint, and tests it after fitting."""
    from recipes import digits_cnn

    (tmp_path / "first").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    first = digits_cnn.main(["fit", "--trainer.max_epochs=1", "--test_after_fit=false", *QUIET])
    best = Path(first.trainer.checkpoint_callback.best_model_path).name
    shutil.move(tmp_path / "first" / "logs", tmp_path / "moved")
    run = tmp_path / "moved" / "digits_cnn" / "version_0"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resumed = digits_cnn.main(
        ["fit", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--trainer.max_epochs=2", *QUIET]
    )
    assert Path(resumed.trainer.logger.log_dir).resolve() == run.resolve()
    assert (run / "config.resume-1.yaml").is_file() and not (tmp_path / "elsewhere" / "logs").exists()
    checkpoint = resumed.trainer.checkpoint_callback
    best_path = Path(checkpoint.best_model_path)
    assert best_path.is_file() and best_path.parent.resolve() == (run / "checkpoints").resolve()
    assert {Path(path).name for path in checkpoint.best_k_models} == {best_path.name}  # the top-1, kept across the move
    assert (run / "checkpoints" / best).is_file() or best_path.name != best  # an older best is replaced, not lost
    assert "test/acc" in resumed.trainer.callback_metrics  # test_after_fit read the best checkpoint
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
