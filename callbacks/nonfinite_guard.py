"""Catch NaN/Inf in inputs, loss, gradients, parameters and normalization statistics before they reach the weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

Action = Literal["skip", "stop", "checkpoint_and_stop"]


class NonFiniteError(RuntimeError):
    """Training went non-finite and could not go on, or a checkpoint would have held NaN/Inf."""


class NonFiniteGuard(Callback):
    """Check the loss, gradients and normalization statistics for NaN/Inf before each optimizer step; act on a hit.

    The check runs in ``on_before_optimizer_step`` (after backward, before clipping and the step). A NaN/Inf input
    or parameter shows up in the loss and gradients it feeds, so inputs and parameters join the per-step check only
    on request (``check_inputs``, ``check_params``: to catch bad values that never reach the loss, such as input
    values masked out before use); when the check fires, the report names the first non-finite input and parameter
    all the same.

    When it fires, the offending update is never applied, whatever the action: all gradients are set to ``None``,
    so the optimizer skips every parameter and its state (Adam moments, step counts, momentum buffers) stays as it
    was. The running statistics of normalization layers (BatchNorm's ``running_mean``/``running_var``, updated by
    the forward pass itself) are put back as they were before the batch. The learning-rate scheduler still steps.
    One check costs one sum per checked tensor (a few fused kernels on GPU), a copy of the normalization statistics
    and one host sync; the exact per-tensor checks run only when that finds something.

    Actions:

    - ``"skip"``: drop the update and go on; ``skipped_steps`` counts them (saved in checkpoints). Non-finite
      *parameters* cannot be repaired by skipping, so they stop training as ``"stop"`` does, and so does a run of
      ``max_consecutive_skips`` skipped steps, or an epoch whose every checked update was skipped (shorter than
      ``max_consecutive_skips`` steps, it would otherwise end as if it had trained).
    - ``"stop"``: set ``trainer.should_stop``; the report (also kept in ``.report``) names the step, the batch, the
      loss and the first non-finite input, gradient, parameter and normalization statistic.
    - ``"checkpoint_and_stop"``: save ``nonfinite-step=<step>.ckpt`` (weights from before the bad update) in
      ``dirpath`` (default: the trainer's ``default_root_dir``), then stop.

    A stopped run still validates and writes its checkpoints (all finite: the bad update was never applied), then
    ``fit`` raises :class:`NonFiniteError` with the report, so a script or scheduler sees a failed run (with
    ``raise_on_stop=False`` it returns normally). A checkpoint of a model with non-finite weights is never written:
    saving one raises :class:`NonFiniteError` naming the first bad tensor. A validation metric that a checkpoint or
    early-stopping callback watches and that comes out NaN/Inf (finite but huge weights) raises at once, before any
    checkpoint named after it is written. Under DDP any rank's detection is shared
    with all ranks, so they skip or stop together.

    Args:
        action: What to do on a non-finite value.
        check_inputs: Also check the floating-point tensors of each training batch on every step.
        check_loss: Check the loss passed to backward.
        check_grads: Check the gradients.
        check_params: Also check the parameters on every step.
        restore_norm_stats: Put normalization running statistics back when an update is dropped.
        every_n_steps: Check one optimizer step in this many (1: every step, the only way to skip every bad one).
        dirpath: Checkpoint folder for ``"checkpoint_and_stop"``.
        max_consecutive_skips: With ``"skip"``, stop after this many skipped steps in a row (``None``: never).
        raise_on_stop: Raise :class:`NonFiniteError` at the end of a run the guard stopped.

    Example:
        >>> NonFiniteGuard(action="checkpoint_and_stop", dirpath="checkpoints/nonfinite")  # doctest: +ELLIPSIS
        <...NonFiniteGuard object at ...>
    """

    def __init__(
        self,
        action: Action = "skip",
        check_inputs: bool = False,
        check_loss: bool = True,
        check_grads: bool = True,
        check_params: bool = False,
        restore_norm_stats: bool = True,
        every_n_steps: int = 1,
        dirpath: str | Path | None = None,
        max_consecutive_skips: int | None = None,
        raise_on_stop: bool = True,
    ) -> None:
        if action not in ("skip", "stop", "checkpoint_and_stop"):
            raise ValueError(f"`action` must be 'skip', 'stop' or 'checkpoint_and_stop', got {action!r}")
        if not (check_inputs or check_loss or check_grads or check_params):
            raise ValueError("Enable at least one of `check_inputs`, `check_loss`, `check_grads`, `check_params`")
        if every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be >= 1, got {every_n_steps}")
        if max_consecutive_skips is not None and max_consecutive_skips < 1:
            raise ValueError(f"`max_consecutive_skips` must be >= 1 or None, got {max_consecutive_skips}")
        self.action = action
        self.check_inputs = check_inputs
        self.check_loss = check_loss
        self.check_grads = check_grads
        self.check_params = check_params
        self.restore_norm_stats = restore_norm_stats
        self.every_n_steps = every_n_steps
        self.dirpath = dirpath
        self.max_consecutive_skips = max_consecutive_skips
        self.raise_on_stop = raise_on_stop

        self.skipped_steps = 0
        self.consecutive_skips = 0
        self._epoch_checks = self._epoch_skips = 0  # checked and skipped updates of the current epoch
        self.report: str | None = None
        self.checkpoint_path: str | None = None
        self.stopped = False
        # Per optimizer step (gradient accumulation runs several batches per step): the losses passed to backward,
        # the first non-finite input seen, and the normalization statistics from before the first forward pass.
        self._losses: list[Tensor] = []
        self._batches: list[Any] = []
        self._batch_idx: int | None = None
        self._norm_stats: dict[str, Tensor] | None = None
        # The statistics tensors themselves, found once per fit: walking every module on every step costs more
        # than the checks on a small model.
        self._stat_tensors: list[tuple[str, Tensor]] = []

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stat_tensors = _norm_statistics(pl_module)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_checks = self._epoch_skips = 0

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped or not self._epoch_checks or self._epoch_skips < self._epoch_checks:
            return
        self.report = (
            f"Every one of the {self._epoch_checks} checked updates of epoch {trainer.current_epoch} was skipped on "
            f"non-finite values, so the epoch trained nothing; the last: {self.report}"
        )
        self.stopped = True
        trainer.should_stop = True
        rank_zero_warn(self.report)

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.raise_on_stop:
            return
        watched = {cb.monitor for cb in trainer.checkpoint_callbacks if getattr(cb, "monitor", None)}
        watched |= {cb.monitor for cb in trainer.early_stopping_callbacks if getattr(cb, "monitor", None)}
        for name in sorted(watched):
            value = trainer.callback_metrics.get(name)
            if value is not None and not torch.isfinite(torch.as_tensor(value)).all():
                skipped = (
                    f"; {self.skipped_steps} updates were skipped on non-finite values" if self.skipped_steps else ""
                )
                raise NonFiniteError(
                    f"The validation metric {name} is {float(value)} after epoch {trainer.current_epoch}: the model's "
                    f"outputs are not finite (diverged: a learning rate too high?){skipped}. No checkpoint was written "
                    f"for this epoch. {self.report or ''}".strip()
                )

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._due(trainer):
            return
        self._batch_idx = batch_idx
        if self.restore_norm_stats and self._norm_stats is None:
            self._norm_stats = {name: t.detach().clone() for name, t in self._stat_tensors}
        # Kept, not checked: a check joins the step's single host sync (a sync per tensor here costs more than a
        # small model's step), and the report describes the inputs of a bad step.
        self._batches.append(batch)

    @override
    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self.check_loss and self._due(trainer):
            self._losses.append(loss.detach())

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        losses, self._losses = self._losses, []
        batches, self._batches = self._batches, []
        norm_stats, self._norm_stats = self._norm_stats, None
        if not self._due(trainer):
            return
        # The optimizer's parameters are the ones this step changes (frozen ones cannot turn non-finite).
        params = [p for group in optimizer.param_groups for p in group["params"]]
        inputs = [t for batch in batches for t in _float_tensors(batch)] if self.check_inputs else []
        bad = self._any_nonfinite(losses, inputs, params)
        bad_input, named = None, list(pl_module.named_parameters()) if bad else []
        if bad:  # the fused check can overflow on huge finite values: the exact per-tensor checks decide
            bad_input = next(filter(None, map(_first_nonfinite_input, batches)), None)
            exact = [*((f"loss{i}", loss) for i, loss in enumerate(losses)), *self._stat_tensors]
            if self.check_grads:
                exact += [(name, p.grad) for name, p in named]
            if self.check_params:
                exact += [(name, p.detach()) for name, p in named]
            bad = (self.check_inputs and bad_input is not None) or _first_nonfinite_tensor(exact) is not None
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        self._epoch_checks += 1
        if not bad:
            self.consecutive_skips = 0
            return

        named = named or list(pl_module.named_parameters())  # another rank found the bad value
        step = trainer.global_step
        first_param = _first_nonfinite(named, grads=False)
        first_stat = _first_nonfinite_tensor(self._stat_tensors)
        if norm_stats is not None:
            restored = dict(self._stat_tensors)
            with torch.no_grad():
                for name, saved in norm_stats.items():
                    restored[name].copy_(saved)
        action = self.action
        if action == "skip" and first_param is not None:
            action = "stop"  # skipping cannot bring back parameters that are already NaN/Inf
        if action == "skip" and self.max_consecutive_skips and self.consecutive_skips + 1 >= self.max_consecutive_skips:
            action = "stop"

        self.report = self._report(trainer, step, bad_input, losses, named, first_param, first_stat, action)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

        if action == "skip":
            self.skipped_steps += 1
            self.consecutive_skips += 1
            self._epoch_skips += 1
            rank_zero_warn(self.report)
            return
        if action == "checkpoint_and_stop" and first_param is None:
            dirpath = Path(self.dirpath if self.dirpath is not None else trainer.default_root_dir)
            self.checkpoint_path = str(dirpath / f"nonfinite-step={step}.ckpt")
            trainer.save_checkpoint(self.checkpoint_path)
            self.report += f" Checkpoint (weights before the bad update): {self.checkpoint_path}"
        self.stopped = True
        trainer.should_stop = True
        rank_zero_warn(self.report)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stopped and self.raise_on_stop:
            raise NonFiniteError(f"Training stopped on non-finite values. {self.report}")

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        tensors = [(name, p.detach()) for name, p in pl_module.named_parameters()]
        first = _first_nonfinite_tensor([*tensors, *_norm_statistics(pl_module)])
        if first is not None:
            raise NonFiniteError(
                f"Refusing to write a checkpoint at step {trainer.global_step}: {_describe(first)} holds NaN/Inf. "
                f"Resume from the last checkpoint written before this step. {self.report or ''}".rstrip()
            )

    def _any_nonfinite(self, losses: list[Tensor], inputs: list[Tensor], params: list[Tensor]) -> bool:
        """Whether any checked value may be non-finite, in one host sync: a NaN or Inf anywhere makes the total
        non-finite (as does a sum above the float range, which the exact checks then clear)."""
        tensors = [*losses, *inputs, *(t for _, t in self._stat_tensors)]
        if self.check_grads:
            tensors += [p.grad for p in params if p.grad is not None]
        if self.check_params:
            tensors += [p.detach() for p in params]
        return bool(tensors) and not math.isfinite(_total(tensors).item())

    def _report(
        self,
        trainer: L.Trainer,
        step: int,
        bad_input: str | None,
        losses: list[Tensor],
        named: list[tuple[str, torch.nn.Parameter]],
        first_param: str | None,
        first_stat: str | None,
        action: str,
    ) -> str:
        parts = [f"Non-finite values at step {step} (epoch {trainer.current_epoch}, batch {self._batch_idx}):"]
        parts.append(f"first non-finite input: {bad_input or 'none'};")
        if losses:
            values = ", ".join(f"{float(loss.float().mean()):g}" for loss in losses)
            parts.append(f"loss={values};")
        if self.check_grads:
            first_grad = _first_nonfinite(named, grads=True)
            parts.append(f"first non-finite gradient: {_describe(first_grad)};")
        parts.append(f"first non-finite parameter: {_describe(first_param)};")
        restored = " (restored)" if first_stat and self.restore_norm_stats else ""
        parts.append(f"first non-finite normalization statistic: {_describe(first_stat)}{restored}.")
        what = {
            "skip": "update skipped",
            "stop": "update dropped, training stops",
            "checkpoint_and_stop": "update dropped, checkpoint saved, training stops",
        }
        parts.append(f"Action: {what[action]}.")
        return " ".join(parts)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps, "consecutive_skips": self.consecutive_skips}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = state_dict["skipped_steps"]
        self.consecutive_skips = state_dict["consecutive_skips"]


_HALF = (torch.float16, torch.bfloat16)  # summed in float32: a float16 sum overflows at 65504


def _total(tensors: list[Tensor]) -> Tensor:
    """A scalar that is NaN/Inf when any of ``tensors`` holds NaN/Inf.

    On CPU, where kernels do not fuse, one plain sum per tensor reads each value once: half the cost of a norm. On
    accelerators, the multi-tensor norm (``get_total_norm``, torch 2.6+) launches a few kernels for all of them.
    """
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if tensors[0].device.type == "cpu" or total_norm is None:
        return torch.stack([t.sum(dtype=torch.float32) if t.dtype in _HALF else t.sum() for t in tensors]).sum()
    return total_norm(tensors, norm_type=2.0)


def _float_tensors(batch: Any) -> list[Tensor]:
    """The floating-point tensors of a batch (tensors, or dicts, lists and tuples of them)."""
    if isinstance(batch, Tensor):
        return [batch] if batch.is_floating_point() else []
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    return [t for value in values for t in _float_tensors(value)]


def _first_nonfinite(named: list[tuple[str, torch.nn.Parameter]], grads: bool) -> str | None:
    return _first_nonfinite_tensor([(name, p.grad if grads else p.detach()) for name, p in named])


def _first_nonfinite_tensor(named: list[tuple[str, Tensor | None]]) -> str | None:
    for name, t in named:
        if t is not None and not bool(torch.isfinite(t).all()):
            return name
    return None


def _norm_statistics(module: nn.Module) -> list[tuple[str, Tensor]]:
    """The floating-point running statistics of normalization layers (BatchNorm, InstanceNorm, their subclasses)."""
    return [
        (f"{prefix}.{name}" if prefix else name, buffer)
        for prefix, sub in module.named_modules()
        if getattr(sub, "running_mean", None) is not None
        for name, buffer in sub.named_buffers(recurse=False)
        if buffer.is_floating_point()
    ]


def _first_nonfinite_input(batch: Any) -> str | None:
    """``"batch[0]: 3 of 1024 values non-finite, first at (0, 5)"`` for the first bad floating tensor, else None."""
    found: list[str] = []

    def check(t: Tensor, path: str) -> None:
        if not found and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = ~torch.isfinite(t)
            first = tuple(bad.nonzero()[0].tolist())
            found.append(f"{path}: {int(bad.sum())} of {t.numel()} values non-finite, first at {first}")

    def walk(obj: Any, path: str) -> None:
        if isinstance(obj, Tensor):
            check(obj, path)
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{path}[{key!r}]")
        elif isinstance(obj, (list, tuple)):
            for i, value in enumerate(obj):
                walk(value, f"{path}[{i}]")

    walk(batch, "batch")
    return found[0] if found else None


def _describe(name: str | None) -> str:
    if name is None:
        return "none"
    module = name.rpartition(".")[0] or "<root>"
    return f"'{name}' (module '{module}')"
