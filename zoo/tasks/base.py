"""The root of every task base: optimizer and learning-rate schedule chosen by init arguments.

LightningCLI's ``--optimizer``/``--lr_scheduler`` replace :meth:`TaskModule.configure_optimizers` entirely when
given, so the defaults here never fight a user's choice.
"""

from __future__ import annotations

import os
from typing import IO, Any, ClassVar

import lightning as L
import torch
import torchmetrics
from typing_extensions import Self

from zoo._checkpoint import verify_checkpoint
from zoo._hparams import to_primitive
from zoo._registry import stop_if_resolving
from zoo.tasks.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    check_schedule,
    weight_decay_groups,
)


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
    monitor: ClassVar[tuple[str, str]] = ("val/loss", "min")
    #: Init arguments whose values come from the data (``num_classes``, ``vocab_size``, ...): the CLI links each from
    #: the datamodule attribute of the same name, so they are never given twice.
    data_links: ClassVar[tuple[str, ...]] = ()

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
        if not lr > 0 or lr == float("inf"):  # written so that NaN fails too
            raise ValueError(f"lr must be a positive finite number, got {lr}")
        if not (weight_decay >= 0 and warmup_epochs >= 0 and 0 <= min_lr_ratio <= 1):
            raise ValueError("weight_decay and warmup_epochs must be >= 0 and min_lr_ratio in [0, 1]")
        check_schedule(scheduler, warmup_epochs, optimizer)
        # Collects the init arguments of the whole subclass chain, so load_from_checkpoint rebuilds the model.
        self.save_hyperparameters()
        # Hydra's ListConfig/DictConfig, numpy values and tuples as plain lists, dicts and scalars: checkpoints load
        # with weights_only=True, hparams.yaml (written from hparams_initial) with yaml.safe_load.
        self.save_hyperparameters({key: to_primitive(value, key) for key, value in self.hparams.items()})
        # Subclasses build their layers after this returns: zoo.preset_config stops here with the arguments.
        stop_if_resolving(self, dict(self.hparams))

    @property
    def example_input_array(self) -> Any:
        """The example input, in the parameters' floating dtype: ``precision="64-true"`` converts the parameters but
        not this tensor, and Lightning's model summary feeds it as it is."""
        example = self._example_input_array
        if isinstance(example, torch.Tensor) and example.is_floating_point() and example.dtype != self.dtype:
            return example.to(self.dtype)
        return example

    @example_input_array.setter
    def example_input_array(self, example: Any) -> None:
        self._example_input_array = example

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the model's and the datamodule's hyperparameters as primitives (a datamodule from another project
        may hold omegaconf values, which Lightning copies into the checkpoint as they are)."""
        for key, type_key in (
            ("hyper_parameters", "hparams_type"),
            ("datamodule_hyper_parameters", "datamodule_hparams_type"),
        ):
            if key in checkpoint:
                checkpoint[key] = to_primitive(checkpoint[key], key)
                checkpoint.pop(type_key, None)  # DictConfig when the hparams were one; a dict now
        # A checkpoint written inside an epoch carries the training metrics' sums so far, so that a run resumed
        # from it logs the epoch's values an uninterrupted run would (metric states are not in the state_dict).
        # At an epoch's end they belong to the finished epoch and must not leak into the next.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        if progress.get("is_last_batch") is False:
            flush = getattr(self, "_update_train_metrics", None)
            if callable(flush):
                flush()
            checkpoint["train_metric_states"] = {
                name: _copy_state(metric.metric_state) for name, metric in self._train_metrics()
            }

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | os.PathLike[str] | IO[bytes],
        map_location: Any = None,
        hparams_file: str | os.PathLike[str] | None = None,
        strict: bool | None = None,
        weights_only: bool | None = True,
        **kwargs: Any,
    ) -> Self:
        """Lightning's ``load_from_checkpoint``, reading tensors only (``weights_only=True``) and refusing a file
        whose records fail their checksum. Lightning (2.6.6+) builds only an already imported subclass of ``cls``
        named by the checkpoint, through an allow-listed instantiator."""
        if isinstance(checkpoint_path, (str, os.PathLike)):
            verify_checkpoint(checkpoint_path)
        return super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put back the training metrics' sums of an epoch that was interrupted."""
        states = checkpoint.get("train_metric_states", {})
        for name, metric in self._train_metrics():
            for key, value in states.get(name, {}).items():
                setattr(metric, key, _copy_state(value))

    def _train_metrics(self) -> list[tuple[str, torchmetrics.Metric]]:
        return [
            (name, module)
            for name, module in self.named_modules()
            if name.startswith("train") and isinstance(module, torchmetrics.Metric)
        ]

    # --- what every task supplies, so one registry-driven test covers every task and preset ---------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> Any:
        """A random batch in the form this task's datamodules yield (inputs and targets)."""
        raise NotImplementedError

    def batch_loss(self, batch: Any) -> torch.Tensor:
        """The training loss of one batch, as ``training_step`` computes it (no logging, no metric updates)."""
        raise NotImplementedError

    #: Adam learning rate at which a model of this task overfits ``example_batch`` (the tests use it).
    overfit_lr: ClassVar[float] = 1e-3

    def overfit_bound(self, batch: Any) -> float:
        """The loss a model of this task must get under when it overfits ``batch`` (the tests use it)."""
        return 0.05

    def log_on_logging_steps(self, name: str, value: torch.Tensor) -> None:
        """``self.log`` a per-step value only on the steps the logger writes (and under ``fast_dev_run``).

        ``self.log`` costs about as much as a small model's step. The step rule is the Trainer's own: a step is
        logged when ``global_step + 1`` is a multiple of ``log_every_n_steps``.
        """
        trainer = self.trainer
        if trainer.fast_dev_run or (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
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


def _copy_state(state: Any) -> Any:
    """A detached copy of a metric state (tensors, lists of tensors, or dicts of those)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copy_state(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [_copy_state(value) for value in state]
    return state
