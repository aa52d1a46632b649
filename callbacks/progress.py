"""Lightning's RichProgressBar, redrawn every ``refresh_rate`` batches instead of every batch.

Lightning 2.6's ``RichProgressBar`` updates the task, recomputes the progress-bar metrics and redraws the live
display on every batch whatever ``refresh_rate`` says; on a small model that costs a large share of each step
(see ``benchmarks/loop_overhead.py``). This subclass skips those batches, and always draws the last one.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar as _RichProgressBar
from typing_extensions import override


class RichProgressBar(_RichProgressBar):
    """Rich progress bar that honours ``refresh_rate`` on the per-batch hooks.

    Example:
        >>> RichProgressBar(refresh_rate=10).refresh_rate
        10
    """

    def _skip(self, batch_idx: int, total: int | float) -> bool:
        done = batch_idx + 1
        return self.refresh_rate > 1 and done % self.refresh_rate != 0 and done != total

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._skip(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._skip(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
