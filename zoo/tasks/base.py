"""The root of every task base: optimizer and learning-rate schedule chosen by init arguments.

LightningCLI's ``--optimizer``/``--lr_scheduler`` replace :meth:`TaskModule.configure_optimizers` entirely when
given, so the defaults here never fight a user's choice.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from zoo.tasks.optim import OptimizerName, SchedulerName, build_optimizer, build_scheduler, check_schedule


class TaskModule(L.LightningModule):
    """LightningModule with a configurable optimizer and schedule.

    Args:
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (SGD uses Nesterov momentum when ``momentum > 0``).
        lr: peak learning rate.
        weight_decay: decoupled weight decay; never applied to biases and normalization weights.
        momentum: SGD momentum.
        scheduler: ``"cosine"``, ``"onecycle"``, ``"step"`` (x0.1 at 50% and 75% of training),
            ``"plateau"`` (x0.1 when ``val/loss`` stalls for 5 epochs) or ``"none"``.
        warmup_epochs: linear warmup length in epochs (fractions allowed), stepped per batch.
        min_lr_ratio: final learning rate of cosine/one-cycle as a fraction of ``lr``.
    """

    def __init__(
        self,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if weight_decay < 0 or warmup_epochs < 0 or not 0 <= min_lr_ratio <= 1:
            raise ValueError("weight_decay and warmup_epochs must be >= 0 and min_lr_ratio in [0, 1]")
        check_schedule(scheduler, warmup_epochs)
        # Collects the init arguments of the whole subclass chain, so load_from_checkpoint rebuilds the model.
        self.save_hyperparameters()

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = build_optimizer(self, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = build_scheduler(
            optimizer, hp.scheduler, total_steps, max(1, total_steps // epochs), hp.warmup_epochs, hp.min_lr_ratio
        )
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
