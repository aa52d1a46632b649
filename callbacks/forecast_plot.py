"""Predicted against actual values of a forecaster, with its interval and its error at each horizon step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from callbacks._utils import IMAGE_LOGGERS, log_image, require_matplotlib

_KEYS = ("preds", "target", "observed", "lower", "upper")


class ForecastPlotLogger(Callback):
    """Log a plot of the validation forecasts every ``every_n_epochs`` epochs (``val/forecast``) and of the test
    forecasts after testing (``test/forecast``).

    The module's validation and test steps must return a mapping with ``preds``, ``target`` (``(B, H, T)``, original
    units), ``observed`` (a mask of the same shape) and, for intervals, ``lower`` and ``upper``, as the zoo's
    forecasters do. Consecutive windows are drawn in loader order (the first target): the actual values, the one-step
    and the last-step forecasts with the one-step interval; beside them the MAE at each horizon step. Nothing is
    gathered when no logger takes images.

    Args:
        every_n_epochs: validation epochs between plots (0: only after testing).

    Example:
        >>> ForecastPlotLogger(every_n_epochs=5).every_n_epochs
        5
    """

    def __init__(self, every_n_epochs: int = 10) -> None:
        require_matplotlib(type(self).__name__)
        if every_n_epochs < 0:
            raise ValueError(f"`every_n_epochs` must be >= 0, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self._parts: list[dict[str, torch.Tensor]] = []
        self._active = False

    def _wanted(self, trainer: L.Trainer, testing: bool) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return False
        if not any(isinstance(logger, IMAGE_LOGGERS) for logger in trainer.loggers):
            return False
        every = self.every_n_epochs
        return testing or (bool(every) and (trainer.current_epoch + 1) % every == 0)

    def _start(self, trainer: L.Trainer, testing: bool) -> None:
        self._parts.clear()
        self._active = self._wanted(trainer, testing)

    def _gather(self, outputs: Any) -> None:
        if not self._active or not isinstance(outputs, Mapping) or "preds" not in outputs:
            return
        self._parts.append({key: outputs[key].detach().float().cpu() for key in _KEYS if key in outputs})

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        if not self._active or not self._parts:
            return
        parts = {key: torch.cat([part[key] for part in self._parts]) for key in self._parts[0]}
        self._parts.clear()
        figure = plot_forecast(**parts, title=f"{type(pl_module).__name__} ({split})")
        log_image(trainer, f"{split}/forecast", figure, trainer.global_step)

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, testing=False)

    @override
    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, testing=True)

    @override
    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self._gather(outputs)

    @override
    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        self._gather(outputs)

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    @override
    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


def plot_forecast(
    preds: torch.Tensor,
    target: torch.Tensor,
    observed: torch.Tensor,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    title: str = "",
) -> Any:
    """A matplotlib figure of consecutive windows ``(N, H, T)`` (first target): the actual values, the one-step and
    the last-step forecasts with the one-step interval, and the MAE at each horizon step over the observed values."""
    from matplotlib.figure import Figure

    preds, target, observed = preds.float().numpy(), target.float().numpy(), observed.bool().numpy()
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    series, errors = figure.subplots(1, 2, width_ratios=(3, 1))
    horizon = preds.shape[1]
    origin = np.arange(len(preds))
    series.plot(origin, np.where(observed[:, 0, 0], target[:, 0, 0], np.nan), color="black", lw=1.2, label="actual")
    series.plot(origin, preds[:, 0, 0], lw=1, label="1 step ahead")
    series.plot(origin + horizon - 1, preds[:, -1, 0], lw=1, ls="--", label=f"{horizon} steps ahead")
    if lower is not None and upper is not None:
        low, high = lower[:, 0, 0].float().numpy(), upper[:, 0, 0].float().numpy()
        series.fill_between(origin, low, high, alpha=0.25, lw=0, label="interval (1 step)")
    series.set(xlabel="window (forecast origin)", title=title)
    series.legend(fontsize=7, loc="upper left")
    error = np.abs(preds - target) * observed  # (N, H, T)
    by_step = error.sum((0, 2)) / np.maximum(observed.sum((0, 2)), 1)
    errors.bar(np.arange(1, horizon + 1), by_step)
    errors.set(xlabel="horizon step", title="MAE by step")
    return figure
