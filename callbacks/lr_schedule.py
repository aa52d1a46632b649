"""A plot of the learning rate of every optimizer step, drawn at the end of fit."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from callbacks._utils import log_image, require_matplotlib


class LRScheduleLogger(Callback):
    """Record the learning rate used by each optimizer step and log the whole curve as one image at the end of fit.

    ``LearningRateMonitor`` logs the numbers as they come; this draws the schedule as a whole, which is what one
    checks for warmup, restarts or a schedule cut short. One curve per optimizer and parameter group, named like
    ``SGD`` (one group) or ``AdamW-1/pg0`` (second optimizer, first group). The history (``.history``:
    ``{curve: [(step, lr), ...]}``) survives resuming from a checkpoint, so the plot covers the whole run.

    Image tag ``lr/schedule`` through :func:`log_image`.

    Args:
        tag: Image name.
        log_scale: Use a logarithmic y axis.

    Example:
        >>> LRScheduleLogger(log_scale=True)  # doctest: +ELLIPSIS
        <...LRScheduleLogger object at ...>
    """

    def __init__(self, tag: str = "lr/schedule", log_scale: bool = False) -> None:
        require_matplotlib(type(self).__name__)
        if not tag:
            raise ValueError("`tag` must not be empty")
        self.tag = tag
        self.log_scale = log_scale
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._last_step = -1

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # With gradient accumulation several batches share one optimizer step: record it once.
        if step == self._last_step:
            return
        self._last_step = step
        many_optimizers = len(trainer.optimizers) > 1
        for i, optimizer in enumerate(trainer.optimizers):
            base = type(optimizer).__name__ + (f"-{i}" if many_optimizers else "")
            for j, group in enumerate(optimizer.param_groups):
                name = base + (f"/pg{j}" if len(optimizer.param_groups) > 1 else "")
                self.history.setdefault(name, []).append((step, float(group["lr"])))

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.history or not trainer.is_global_zero:
            return
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4))
        ax = fig.add_subplot()
        for name, points in self.history.items():
            steps, lrs = zip(*points, strict=True)
            ax.plot(steps, lrs, label=name)
        if self.log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("learning rate")
        ax.set_title("learning-rate schedule")
        ax.grid(alpha=0.3)
        if len(self.history) > 1:
            ax.legend()
        fig.tight_layout()
        log_image(trainer, self.tag, fig, trainer.global_step)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: list(points) for name, points in self.history.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {name: [tuple(p) for p in points] for name, points in state_dict["history"].items()}
