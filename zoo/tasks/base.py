"""The root of every task: the training loop, written once.

A task says only what differs (Lightning's own loop is the model: one loop, many modules):

- :meth:`TaskModule.step`: how a batch becomes a loss, how many samples (or tokens) it averages over, and the values
  the split's metrics update with;
- :meth:`TaskModule.build_metrics`: one metric collection, cloned per split (``val/acc``, ``test/acc``, ...);
- :meth:`TaskModule.update_metrics` and :meth:`TaskModule.epoch_values`, when its metrics take other arguments than
  the collection's ``update(**values)`` or it logs derived values (perplexity from the loss);
- :meth:`TaskModule.predict_batch`: what ``predict_step`` returns;
- for the tools (predict, serve, export): :meth:`TaskModule.preprocessing` (what the model reads),
  :meth:`TaskModule.predict_tensors` (one input tensor to named output tensors in the data's units) and
  :meth:`TaskModule.answers` (those outputs as answers: top-k classes, forecasts, images, text);
- ``monitor``: the metric to checkpoint and stop on; ``data_links``: the init arguments that come from the data.

The base owns ``training_step``, ``validation_step``, ``test_step``, ``predict_step``, the epoch hooks, the per-split
losses (``{train,val,test}/loss``, torchmetrics objects, so every logged value covers every rank's samples), metric
logging, the bounded buffering of training-metric updates, and the optimizer and learning-rate schedule chosen by
init arguments. LightningCLI's ``--optimizer``/``--lr_scheduler`` replace :meth:`TaskModule.configure_optimizers`
entirely when given, so the defaults here never fight a user's choice.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import AttributeDict
from torchmetrics import MeanMetric, Metric, MetricCollection
from typing_extensions import Self

from zoo.checkpoint import CLASS_PATH_KEY, check_finite, to_primitive, verify_checkpoint
from zoo.tasks.optim import (
    OptimizerName,
    SchedulerName,
    build_optimizer,
    build_scheduler,
    check_schedule,
    weight_decay_groups,
)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass
class StepOutput:
    """What a task computes on one batch.

    Args:
        loss: the batch's mean loss (what training backpropagates).
        size: what the loss is a mean over (samples, tokens, observed values): an epoch's loss is the mean over all
            of them, batches weighted by ``size``.
        values: the keyword arguments of the split's :meth:`TaskModule.update_metrics`; in training they are
            gathered over several batches first, so they must be batch-first tensors.
    """

    loss: torch.Tensor
    size: torch.Tensor | int = 1
    values: dict[str, Any] = field(default_factory=dict)


class TaskModule(L.LightningModule):
    """LightningModule that runs the loop for a task; a task subclass says how a batch becomes a loss.

    Args:
        optimizer: ``"adamw"``, ``"adam"`` or ``"sgd"`` (SGD uses Nesterov momentum when ``momentum > 0``).
        lr: peak learning rate.
        weight_decay: decoupled weight decay; never applied to biases and normalization weights.
        momentum: SGD momentum.
        scheduler: ``"cosine"``, ``"onecycle"``, ``"step"`` (x0.1 at 50% and 75% of training),
            ``"plateau"`` (x0.1 when ``val/loss`` stalls for 5 epochs) or ``"none"``.
        warmup_epochs: linear warmup length in epochs (fractions allowed), stepped per batch.
        warmup_steps: linear warmup length in optimizer steps, added to ``warmup_epochs`` (runs measured in steps).
        min_lr_ratio: final learning rate of cosine/one-cycle as a fraction of ``lr``.
    """

    #: The validation metric to checkpoint and stop on, and its direction (recipes and the ``zoo`` CLI use it).
    monitor: ClassVar[tuple[str, str]] = ("val/loss", "min")
    #: Init arguments whose values come from the data (``num_classes``, ``vocab_size``, ...): the CLI links each from
    #: the datamodule attribute of the same name, so they are never given twice.
    data_links: ClassVar[tuple[str, ...]] = ()
    #: The splits that keep a copy of :meth:`build_metrics` (metrics in training cost time on every batch).
    metric_splits: ClassVar[tuple[Split, ...]] = ("val", "test")
    #: Training batches whose outputs are gathered before one update of the training loss and metrics: an update
    #: costs a fixed Python overhead, far more than a small model's step. The epoch's values are the same sums.
    metric_update_interval: ClassVar[int] = 32
    #: ... or fewer, once the gathered metric values hold this many elements (per-step outputs are large).
    metric_buffer_elements: ClassVar[int] = 1 << 22
    #: Adam learning rate at which a model of this task overfits :meth:`example_batch` (the tests use it).
    overfit_lr: ClassVar[float] = 1e-3
    #: Whether the model continues text token by token (a language model) rather than answering it in one pass.
    generates_text: ClassVar[bool] = False
    #: Whether each answer of :meth:`answers` holds an ``image`` (the tools write it as a PNG).
    answers_images: ClassVar[bool] = False

    def __init__(
        self,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        momentum: float = 0.9,
        scheduler: SchedulerName = "cosine",
        warmup_epochs: float = 0.0,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        if not lr > 0 or lr == float("inf"):  # written so that NaN fails too
            raise ValueError(f"lr must be a positive finite number, got {lr}")
        if not (weight_decay >= 0 and warmup_epochs >= 0 and warmup_steps >= 0 and 0 <= min_lr_ratio <= 1):
            raise ValueError("weight_decay, warmup_epochs and warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        check_schedule(scheduler, warmup_epochs + warmup_steps, optimizer)
        # Collects the init arguments of the whole subclass chain, so load_from_checkpoint rebuilds the model.
        self.save_hyperparameters()
        # As plain lists, dicts and scalars (Hydra's ListConfig/DictConfig, numpy values and tuples are not):
        # checkpoints load with weights_only=True, hparams.yaml with yaml.safe_load. And only what the model can be
        # rebuilt with: LightningCLI records every target of its parser's links, those of other tasks as None.
        accepted = init_parameter_names(type(self))
        for key, value in list(self.hparams.items()):
            if key[:1] == "_" or key in accepted:
                self.hparams[key] = to_primitive(value, key)
            else:
                del self.hparams[key]
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self._metrics_built = False
        self._train_buffer: list[StepOutput] = []
        self._train_buffer_elements = 0

    @property
    def hparams_initial(self) -> AttributeDict:
        """The hyperparameters as first saved (what the loggers record), as primitives and without the keys the model
        does not take (see ``__init__``)."""
        initial = super().hparams_initial
        return AttributeDict({key: to_primitive(value, key) for key, value in initial.items() if key in self.hparams})

    # --- what a task supplies --------------------------------------------------------------------------------------
    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss of one batch and, when ``split`` keeps metrics, the values they update with."""
        raise NotImplementedError

    def build_metrics(self) -> MetricCollection | None:
        """The task's metrics, cloned per split of :attr:`metric_splits` with the prefix ``"<split>/"``.

        Give the collection ``compute_groups=False`` when two of its metrics share a state type: torchmetrics merges
        metrics whose states are equal after the first update, and keeps them merged when they later differ.
        """
        return None

    def update_metrics(self, metrics: MetricCollection, **values: Any) -> None:
        """Update a split's metrics with the ``values`` of :meth:`step` (by default, every metric with all of them)."""
        metrics.update(**values)

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        """What the end of an epoch logs for ``split``: the loss and every metric, by name (metric objects or
        tensors). A task adds derived values or leaves out metrics that are not scalars."""
        values: dict[str, Any] = {f"{split}/loss": loss}
        if metrics is not None:
            values.update(metrics.items(keep_base=False, copy_state=False))
        return values

    def predict_batch(self, batch: Any) -> Any:
        """What ``predict_step`` returns for a batch of inputs (or a batch in the training form); by default the
        outputs of :meth:`predict_tensors` (one tensor when there is one)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs = self.predict_tensors(x)
        return next(iter(outputs.values())) if len(outputs) == 1 else outputs

    # --- what the tools use: one path for predict, serve and export ---------------------------------------------------
    def preprocessing(self) -> dict[str, Any]:
        """What the model itself knows of its input, as primitives: ``input`` (``"image"``, ``"series"``,
        ``"tokens"``, ``"text"`` or ``"features"``) and its sizes or vocabulary. The data's preprocessing, saved
        with checkpoints, adds normalization and class names."""
        raise NotImplementedError

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named output tensors in the data's units for one input batch in the model's units (what predict, serve
        and export run; traceable by ``torch.export``)."""
        raise NotImplementedError

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """One answer per sample from the outputs of :meth:`predict_tensors` (a class method: the tools call it for
        exported files too); by default each output as nested lists."""
        size = len(next(iter(outputs.values())))
        return [{name: value[index].tolist() for name, value in outputs.items()} for index in range(size)]

    # --- what the registry-wide tests use ---------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> Any:
        """A random batch in the form this task's datamodules yield (inputs and targets)."""
        raise NotImplementedError

    def batch_loss(self, batch: Any) -> torch.Tensor:
        """The training loss of one batch, as ``training_step`` computes it (no logging, no metric updates)."""
        return self.step(batch, 0, "train").loss

    def overfit_bound(self, batch: Any) -> float:
        """The loss a model of this task must get under when it overfits ``batch`` (the tests use it)."""
        return 0.05

    # --- metrics ---------------------------------------------------------------------------------------------------
    def configure_metrics(self) -> None:
        """(Re)build ``{split}_metrics`` from :meth:`build_metrics`; called at setup, and after a change of the sizes
        the metrics depend on (``reset_classifier``)."""
        metrics = self.build_metrics()
        for split in SPLITS:
            clone = metrics.clone(prefix=f"{split}/") if metrics is not None and split in self.metric_splits else None
            setattr(self, f"{split}_metrics", clone)
        self._metrics_built = True

    def split_metrics(self, split: Split) -> MetricCollection | None:
        """The metric collection of ``split`` (built on first use)."""
        if not self._metrics_built:
            self.configure_metrics()
        return getattr(self, f"{split}_metrics")

    def setup(self, stage: str) -> None:
        if not self._metrics_built:
            self.configure_metrics()  # before the strategy moves the module to its device

    # --- the loop ----------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        output = self.step(batch, batch_idx, "train")
        loss = output.loss.detach()
        self._train_buffer.append(StepOutput(loss, output.size, _detach(output.values)))
        self._train_buffer_elements += sum(v.numel() for v in output.values.values() if isinstance(v, torch.Tensor))
        if (
            len(self._train_buffer) >= self.metric_update_interval
            or self._train_buffer_elements >= self.metric_buffer_elements
        ):
            self.flush_train_buffer()
        self.log_on_logging_steps("train/loss_step", loss)
        # A loss without gradient (a rule with nothing to train) makes no optimizer step.
        return output.loss if output.loss.requires_grad else None

    def flush_train_buffer(self) -> None:
        """Update the training loss and metrics with the batches gathered since the last update."""
        if not self._train_buffer:
            return
        outputs, self._train_buffer, self._train_buffer_elements = self._train_buffer, [], 0
        losses = torch.stack([output.loss for output in outputs])
        sizes = torch.as_tensor([output.size for output in outputs], dtype=losses.dtype, device=losses.device)
        self.train_loss.update(losses, weight=sizes)
        metrics = self.split_metrics("train")
        if metrics is not None:
            self.update_metrics(
                metrics, **{key: torch.cat([o.values[key] for o in outputs]) for key in outputs[0].values}
            )

    def _eval_step(self, batch: Any, batch_idx: int, split: Split) -> dict[str, Any]:
        output = self.step(batch, batch_idx, split)
        getattr(self, f"{split}_loss").update(output.loss, weight=output.size)
        metrics = self.split_metrics(split)
        if metrics is not None:
            self.update_metrics(metrics, **output.values)
        return output.values  # what callbacks see as `outputs` in on_{validation,test}_batch_end

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, batch_idx, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.predict_batch(batch)

    def _log_epoch(self, split: Split) -> None:
        values = self.epoch_values(split, getattr(self, f"{split}_loss"), self.split_metrics(split))
        shown = ("val/loss", self.monitor[0]) if split == "val" else ()
        for name, value in values.items():
            self.log(name, value, prog_bar=name in shown)

    def on_train_epoch_end(self) -> None:
        self.flush_train_buffer()
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def log_on_logging_steps(self, name: str, value: torch.Tensor) -> None:
        """``self.log`` a per-step value only on the steps the logger writes (and under ``fast_dev_run``).

        ``self.log`` costs about as much as a small model's step. The step rule is the Trainer's own: a step is
        logged when ``global_step + 1`` is a multiple of ``log_every_n_steps``.
        """
        trainer = self.trainer
        if trainer.fast_dev_run or (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
            self.log(name, value)

    # --- optimizer and schedule ------------------------------------------------------------------------------------
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Param groups of the default optimizer (a subclass may give groups their own ``lr``)."""
        return weight_decay_groups(self, self.hparams.weight_decay)

    def configure_optimizers(self) -> Any:
        if not any(param.requires_grad for param in self.parameters()):
            return None  # nothing to train (a forecasting rule): `fit` only evaluates
        hp, trainer = self.hparams, self.trainer
        optimizer = build_optimizer(self.optimizer_param_groups(), hp.optimizer, hp.lr, hp.weight_decay, hp.momentum)
        total_steps = max(1, int(trainer.estimated_stepping_batches))  # also sets up the train loader
        warmup = hp.get("warmup_steps", 0)
        if hp.warmup_epochs:
            if trainer.max_epochs is None or trainer.max_epochs < 1:
                raise ValueError("a run of max_steps has no fixed epoch length: give warmup_steps, not warmup_epochs")
            warmup += round(hp.warmup_epochs * max(1, total_steps // trainer.max_epochs))
        scheduler = build_scheduler(optimizer, hp.scheduler, total_steps, warmup, hp.min_lr_ratio)
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # --- inputs and checkpoints ------------------------------------------------------------------------------------
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
        # The class that wrote it, for zoo.load_from_checkpoint (LightningCLI also records it as a hyperparameter;
        # one there without its instantiator would reach __init__).
        checkpoint[CLASS_PATH_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        # A checkpoint written inside an epoch carries the training metrics' sums so far, so that a run resumed
        # from it logs the epoch's values an uninterrupted run would (metric states are not in the state_dict).
        # At an epoch's end they belong to the finished epoch and must not leak into the next.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress", {})
        if progress.get("is_last_batch") is False:
            self.flush_train_buffer()
            checkpoint["train_metric_states"] = {
                name: _copy_state(metric.metric_state) for name, metric in self._train_metrics()
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put back the training metrics' sums of an epoch that was interrupted."""
        states = checkpoint.get("train_metric_states", {})
        for name, metric in self._train_metrics():
            for key, value in states.get(name, {}).items():
                setattr(metric, key, _copy_state(value))

    def _train_metrics(self) -> list[tuple[str, Metric]]:
        if not self._metrics_built:
            self.configure_metrics()
        return [
            (name, module)
            for name, module in self.named_modules()
            if name.startswith("train") and isinstance(module, Metric)
        ]

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
        whose records fail their checksum or hold NaN/Inf weights. Lightning (2.6.6+) builds only an already imported
        subclass of ``cls`` named by the checkpoint, through an allow-listed instantiator."""
        if isinstance(checkpoint_path, (str, os.PathLike)):
            verify_checkpoint(checkpoint_path)
        model = super().load_from_checkpoint(
            checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
        )
        check_finite(model.state_dict(), str(checkpoint_path))
        return model


def init_parameter_names(cls: type) -> set[str]:
    """The named init arguments of ``cls`` and the classes its ``__init__`` passes ``**kwargs`` on to (its MRO)."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not object:
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {"self"}


def _detach(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value.detach() if isinstance(value, torch.Tensor) else value for key, value in values.items()}


def _copy_state(state: Any) -> Any:
    """A detached copy of a metric state (tensors, lists of tensors, or dicts of those)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copy_state(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [_copy_state(value) for value in state]
    return state
