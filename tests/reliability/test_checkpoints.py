"""Checkpoints to resume from hold the state they claim to hold."""

from __future__ import annotations

from pathlib import Path

import torch

from recipes import digits_cnn

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def test_last_checkpoint_holds_the_final_epoch_even_after_the_best_one():
    """Lightning's save_last writes only when the best checkpoint changes; the recipes' last.ckpt never lags."""
    # lr 0.05 makes the later epochs worse than an earlier one, so the best checkpoint stops moving.
    cli = digits_cnn.main(
        ["fit", "--trainer.max_epochs=4", "--model.init_args.lr=0.05", "--test_after_fit=false", *QUIET]
    )
    folder = Path(cli.trainer.logger.log_dir) / "checkpoints"
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert best["epoch"] < 3, "the test needs a run whose best epoch is not the last"
    assert (last["epoch"], last["global_step"]) == (3, cli.trainer.global_step)
    final = cli.model.state_dict()
    assert all(torch.equal(value, final[key]) for key, value in last["state_dict"].items())
    assert {p.name for p in folder.iterdir()} == {
        Path(cli.trainer.checkpoint_callback.best_model_path).name,
        "last.ckpt",
    }
