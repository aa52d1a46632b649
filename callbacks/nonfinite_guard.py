"""Catch NaN/Inf in the loss, gradients or parameters before they reach the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

Action = Literal["skip", "stop", "checkpoint_and_stop"]


class NonFiniteGuard(Callback):
    """Check the loss, gradients and parameters for NaN/Inf before each optimizer step and act on the first hit.

    The check runs in ``on_before_optimizer_step`` (after backward, before clipping and the step) and costs one
    pass over the gradients and parameters plus one host sync per checked step. When it fires, the offending update
    is never applied, whatever the action: all gradients are set to ``None``, so the optimizer skips every parameter
    and its state (Adam moments, step counts, momentum buffers) stays as it was. The learning-rate scheduler still
    steps.

    Actions:

    - ``"skip"``: drop the update and go on; ``skipped_steps`` counts them (saved in checkpoints). Non-finite
      *parameters* cannot be repaired by skipping, so they stop training as ``"stop"`` does, and so does a run of
      ``max_consecutive_skips`` skipped steps.
    - ``"stop"``: set ``trainer.should_stop``; the report (also kept in ``.report``) names the step, the loss and the
      first non-finite parameter and gradient, in ``named_parameters()`` order.
    - ``"checkpoint_and_stop"``: save ``nonfinite-step=<step>.ckpt`` (weights from before the bad update) in
      ``dirpath`` (default: the trainer's ``default_root_dir``), then stop.

    Under DDP any rank's detection is shared with all ranks, so they skip or stop together.

    Args:
        action: What to do on a non-finite value.
        check_loss: Check the loss passed to backward.
        check_grads: Check the gradients.
        check_params: Check the parameters.
        every_n_steps: Check one optimizer step in this many (1: every step, the only way to skip every bad one).
        dirpath: Checkpoint folder for ``"checkpoint_and_stop"``.
        max_consecutive_skips: With ``"skip"``, stop after this many skipped steps in a row (``None``: never).

    Example:
        >>> NonFiniteGuard(action="checkpoint_and_stop", dirpath="checkpoints/nonfinite")  # doctest: +ELLIPSIS
        <...NonFiniteGuard object at ...>
    """

    def __init__(
        self,
        action: Action = "skip",
        check_loss: bool = True,
        check_grads: bool = True,
        check_params: bool = True,
        every_n_steps: int = 1,
        dirpath: str | Path | None = None,
        max_consecutive_skips: int | None = None,
    ) -> None:
        if action not in ("skip", "stop", "checkpoint_and_stop"):
            raise ValueError(f"`action` must be 'skip', 'stop' or 'checkpoint_and_stop', got {action!r}")
        if not (check_loss or check_grads or check_params):
            raise ValueError("Enable at least one of `check_loss`, `check_grads`, `check_params`")
        if every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be >= 1, got {every_n_steps}")
        if max_consecutive_skips is not None and max_consecutive_skips < 1:
            raise ValueError(f"`max_consecutive_skips` must be >= 1 or None, got {max_consecutive_skips}")
        self.action = action
        self.check_loss = check_loss
        self.check_grads = check_grads
        self.check_params = check_params
        self.every_n_steps = every_n_steps
        self.dirpath = dirpath
        self.max_consecutive_skips = max_consecutive_skips

        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.report: str | None = None
        self.checkpoint_path: str | None = None
        # Losses of the micro-batches since the last optimizer step (gradient accumulation calls backward N times).
        self._losses: list[Tensor] = []

    def _due(self, trainer: L.Trainer) -> bool:
        return trainer.global_step % self.every_n_steps == 0

    @override
    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        if self.check_loss and self._due(trainer):
            self._losses.append(loss.detach())

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        losses, self._losses = self._losses, []
        if not self._due(trainer):
            return
        checks = [torch.isfinite(loss).all() for loss in losses]
        named = list(pl_module.named_parameters())
        if self.check_grads:
            checks += [torch.isfinite(p.grad).all() for _, p in named if p.grad is not None]
        if self.check_params:
            checks += [torch.isfinite(p.detach()).all() for _, p in named]
        if not checks:
            return
        device = checks[0].device
        bad = not bool(torch.stack([c.to(device) for c in checks]).all())
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            self.consecutive_skips = 0
            return

        step = trainer.global_step
        first_param = _first_nonfinite(named, grads=False) if self.check_params else None
        action = self.action
        if action == "skip" and first_param is not None:
            action = "stop"  # skipping cannot bring back parameters that are already NaN/Inf
        if action == "skip" and self.max_consecutive_skips and self.consecutive_skips + 1 >= self.max_consecutive_skips:
            action = "stop"

        self.report = self._report(trainer, step, losses, named, first_param, action)
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

        if action == "skip":
            self.skipped_steps += 1
            self.consecutive_skips += 1
            rank_zero_warn(self.report)
            return
        if action == "checkpoint_and_stop":
            dirpath = Path(self.dirpath if self.dirpath is not None else trainer.default_root_dir)
            self.checkpoint_path = str(dirpath / f"nonfinite-step={step}.ckpt")
            trainer.save_checkpoint(self.checkpoint_path)
            self.report += f" Checkpoint (weights before the bad update): {self.checkpoint_path}"
        trainer.should_stop = True
        rank_zero_warn(self.report)

    def _report(
        self,
        trainer: L.Trainer,
        step: int,
        losses: list[Tensor],
        named: list[tuple[str, torch.nn.Parameter]],
        first_param: str | None,
        action: str,
    ) -> str:
        parts = [f"Non-finite values at step {step} (epoch {trainer.current_epoch}):"]
        if losses:
            values = ", ".join(f"{float(loss.float().mean()):g}" for loss in losses)
            parts.append(f"loss={values};")
        if self.check_grads:
            first_grad = _first_nonfinite(named, grads=True)
            parts.append(f"first non-finite gradient: {_describe(first_grad)};")
        if self.check_params:
            parts.append(f"first non-finite parameter: {_describe(first_param)}.")
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


def _first_nonfinite(named: list[tuple[str, torch.nn.Parameter]], grads: bool) -> str | None:
    for name, p in named:
        t = p.grad if grads else p.detach()
        if t is not None and not bool(torch.isfinite(t).all()):
            return name
    return None


def _describe(name: str | None) -> str:
    if name is None:
        return "none"
    module = name.rpartition(".")[0] or "<root>"
    return f"'{name}' (module '{module}')"
