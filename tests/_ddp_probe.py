"""A callback that writes what each DDP rank saw to ``<out_dir>/rank<r>.json``, for tests to compare the ranks.

Appended to a recipe from the command line (with ``tests/`` on ``PYTHONPATH``)::

    DDP_PROBE_DIR=probe python -m recipes.digits_cnn fit --trainer.callbacks+=_ddp_probe.RankProbe ...
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


def _value(metrics: dict[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


def _checksum(tensors: Any) -> float:
    """The sum of all entries in float64: equal on two ranks only if (nearly) every entry is."""
    return sum(float(t.detach().double().sum()) for t in tensors if t.is_floating_point())


class RankProbe(Callback):
    """Record per rank and per epoch the synced metrics, learning rate, scheduler state and weight checksums.

    Args:
        out_dir: folder of the JSON files; ``None`` reads the ``DDP_PROBE_DIR`` environment variable.
    """

    def __init__(self, out_dir: str | None = None) -> None:
        out_dir = out_dir or os.environ.get("DDP_PROBE_DIR")
        if not out_dir:
            raise ValueError("RankProbe needs out_dir or the DDP_PROBE_DIR environment variable")
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {"val": [], "train": [], "val_samples": [], "test_samples": 0, "test": None}
        self._val_samples = 0

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_samples = 0

    @override
    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._val_samples += len(batch[1])

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: callbacks run before the module's hook there, which logs val/loss and val/acc.
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        self.record["val"].append({name: _value(metrics, name) for name in ("val/loss", "val/acc")})
        self.record["val_samples"].append(self._val_samples)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before this epoch's scheduler step, which follows the epoch-end hooks; so `plateau` is the previous one's.
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        early_stopping = trainer.early_stopping_callback
        self.record["train"].append(
            {
                "epoch": trainer.current_epoch,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
                "params": _checksum(pl_module.parameters()),
                "buffers": _checksum(pl_module.buffers()),
                "plateau": _plateau_state(scheduler),
                "early_stopping_wait": early_stopping.wait_count if early_stopping else None,
            }
        )

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
        self.record["final_plateau"] = _plateau_state(scheduler)
        self.record["final_lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        checkpoint = trainer.checkpoint_callback  # it saves after this callback's on_train_epoch_end, so read it here
        if checkpoint is not None and checkpoint.best_model_score is not None:
            self.record["best_model_score"] = float(checkpoint.best_model_score)
            self.record["best_model_path"] = os.path.basename(checkpoint.best_model_path)

    @override
    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self.record["test_samples"] += len(batch[1])

    @override
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.record["test"] = {name: _value(metrics, name) for name in ("test/acc", "test/loss")}
        self.record["test"]["params"] = _checksum(pl_module.parameters())
        self.record["test"]["buffers"] = _checksum(pl_module.buffers())
        self._write(trainer)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._write(trainer)  # also when no test follows the fit

    def _write(self, trainer: L.Trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = dict(self.record, rank=trainer.global_rank, world_size=trainer.world_size)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, indent=1))


def _plateau_state(scheduler: Any) -> dict[str, float] | None:
    if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return None
    return {"best": float(scheduler.best), "num_bad_epochs": scheduler.num_bad_epochs}
