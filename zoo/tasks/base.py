"""The root of every task base: optimizer and learning-rate schedule chosen by init arguments.

LightningCLI's ``--optimizer``/``--lr_scheduler`` replace :meth:`TaskModule.configure_optimizers` entirely when
given, so the defaults here never fight a user's choice.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch

from zoo.tasks.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    check_schedule,
    weight_decay_groups,
)


def _init_arg_names(cls: type) -> set[str]:
    """Named ``__init__`` arguments along the class chain (what ``**kwargs`` forwarding can reach)."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        name
        for klass in cls.__mro__
        if "__init__" in vars(klass)
        for name, param in inspect.signature(klass.__init__).parameters.items()
        if param.kind in named and name != "self"
    }


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

    #: The validation metric to checkpoint and stop on, and its direction (recipes and the ``zoo`` CLI use it).
    monitor: tuple[str, str] = ("val/loss", "min")

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
        # LightningCLI records every value linked from the datamodule (e.g. num_classes) as a hyperparameter, even
        # one this class does not take; rebuilding from the checkpoint would then pass it and fail.
        accepted = _init_arg_names(type(self))
        extra = [key for key in self.hparams if not key.startswith("_") and key not in accepted]
        if extra:
            self.save_hyperparameters(ignore=extra)  # again, so the logged initial hparams drop them too

    def log_on_logging_steps(self, name: str, value: torch.Tensor) -> None:
        """``self.log`` a per-step value only on the steps the logger writes (and under ``fast_dev_run``).

        ``self.log`` costs about as much as a small model's step; this is the check Lightning's LearningRateMonitor
        and ThroughputMonitor use.
        """
        trainer = self._trainer
        if trainer is not None and (trainer._logger_connector.should_update_logs or trainer.fast_dev_run):
            self.log(name, value)

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Param groups of the default optimizer (a subclass may give groups their own ``lr``)."""
        return weight_decay_groups(self, self.hparams.weight_decay)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        optimizer = build_optimizer(self.optimizer_param_groups(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = build_scheduler(
            optimizer, hp.scheduler, total_steps, max(1, total_steps // epochs), hp.warmup_epochs, hp.min_lr_ratio
        )
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}
