"""Forecasting task base: context window -> horizon, errors in original units against honest baselines.

A model of this task takes ``(B, L, F)`` scaled inputs (``L = input_size`` steps of ``F = in_features`` columns,
the ``T = out_features`` targets first) and forecasts ``(B, H, T)`` scaled targets (``H = horizon``); batches are
``datamodules.timeseries.ForecastBatch`` ``(inputs, targets, observed)``. The scaler's statistics and MASE's
denominator come from the datamodule (``data_links``) and are stored as hyperparameters, so a checkpoint alone
forecasts in original units.

Metrics, per split and in original units over the observed targets: ``mae``, ``rmse``, ``mape``, ``smape``
(torchmetrics), ``mase`` (MAE over the in-sample one-step naive MAE of the training span, averaged over targets)
and, with a Gaussian head, ``coverage`` of the central ``coverage_level`` interval. ``test/mae_step{h}`` is the
error at each horizon step (``test/mae_step1``: one step ahead; ``test/mae``: the whole horizon).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanMetric,
    MeanSquaredError,
    Metric,
    MetricCollection,
    SymmetricMeanAbsolutePercentageError,
)

from zoo.tasks.base import TaskModule

DistributionName = Literal["none", "gaussian"]
PointLossName = Literal["mse", "mae"]
#: The smallest forecast standard deviation (scaled units), so the Gaussian NLL stays finite.
MIN_SCALE = 1e-3


class MeanAbsoluteScaledError(Metric):
    """MASE: the MAE of each target divided by its ``scale`` (the training span's one-step naive MAE), averaged.

    >>> metric = MeanAbsoluteScaledError([2.0])
    >>> preds, target = torch.tensor([[[1.0], [3.0]]]), torch.zeros(1, 2, 1)
    >>> metric.update(preds, target, torch.ones(1, 2, 1, dtype=torch.bool))
    >>> float(metric.compute())
    1.0
    """

    full_state_update = False

    def __init__(self, scale: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(list(scale), dtype=torch.float64), persistent=False)
        self.add_state("abs_error", torch.zeros(len(scale), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(scale), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> None:
        """``(B, H, T)`` forecasts, targets and observed mask."""
        weight = observed.to(torch.float64)
        self.abs_error += ((preds - target).abs().to(torch.float64) * weight).sum((0, 1))
        self.count += weight.sum((0, 1))

    def compute(self) -> torch.Tensor:
        return (self.abs_error / self.count.clamp(min=1) / self.scale.to(self.abs_error.device)).mean()


class IntervalCoverage(Metric):
    """The fraction of observed targets inside their forecast interval ``[lower, upper]``.

    >>> metric = IntervalCoverage()
    >>> target = torch.tensor([0.5, 2.0, 1.0, -1.0])
    >>> metric.update(torch.zeros(4), torch.ones(4), target, torch.ones(4, dtype=torch.bool))
    >>> float(metric.compute())
    0.5
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("hits", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, lower: torch.Tensor, upper: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> None:
        """Intervals, targets and observed mask of the same shape."""
        inside = (target >= lower) & (target <= upper) & observed
        self.hits += inside.sum()
        self.total += observed.sum()

    def compute(self) -> torch.Tensor:
        return self.hits / self.total.clamp(min=1)


class HorizonMAE(Metric):
    """MAE at each horizon step over the observed targets: ``(H,)``."""

    full_state_update = False

    def __init__(self, horizon: int) -> None:
        super().__init__()
        self.add_state("abs_error", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> None:
        """``(B, H, T)`` forecasts, targets and observed mask."""
        weight = observed.to(torch.float64)
        self.abs_error += ((preds - target).abs().to(torch.float64) * weight).sum((0, 2))
        self.count += weight.sum((0, 2))

    def compute(self) -> torch.Tensor:
        return self.abs_error / self.count.clamp(min=1)


def point_metrics() -> MetricCollection:
    """MAE, RMSE, MAPE and sMAPE (torchmetrics) over flat observed values."""
    return MetricCollection(
        {
            "mae": MeanAbsoluteError(),
            "rmse": MeanSquaredError(squared=False),
            "mape": MeanAbsolutePercentageError(),
            "smape": SymmetricMeanAbsolutePercentageError(),
        },
        compute_groups=False,
    )


class Forecaster(TaskModule):
    """Task base for forecasters: a subclass implements :meth:`forward_params` (or, for rules, :meth:`forecast`).

    Logs ``train/loss``, ``{val,test}/loss`` and the metrics of the module docstring; with a logger that takes images,
    a predicted-vs-actual plot (``val/forecast`` every ``plot_every_n_epochs`` epochs, ``test/forecast``).
    ``predict_step`` returns forecasts in original units.

    Args:
        input_size: context length ``L`` (from the data).
        horizon: forecast length ``H`` (from the data).
        in_features: input columns ``F``, the targets first (from the data).
        out_features: target columns ``T`` (from the data).
        target_mean: the scaler's center of each target (from the data; default 0).
        target_std: the scaler's scale of each target (from the data; default 1).
        mase_scale: MASE's denominator per target, in original units (from the data; default 1).
        distribution: ``"none"`` (point forecasts, trained on ``loss``) or ``"gaussian"`` (a mean and a standard
            deviation per step, trained on the Gaussian negative log-likelihood; intervals and coverage).
        loss: point loss, ``"mse"`` or ``"mae"``, in scaled units.
        coverage_level: the central probability of the forecast interval (``0.9``: the 5% to 95% quantiles).
        window_norm: standardize each window by its own mean and standard deviation before the network and
            return the forecast to them (RevIN, Kim et al., 2022): for levels outside the training span's range.
        plot_every_n_epochs: validation epochs between forecast plots (0: only after testing).
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/mae", "min")
    data_links: ClassVar[tuple[str, ...]] = (
        "input_size",
        "horizon",
        "in_features",
        "out_features",
        "target_mean",
        "target_std",
        "mase_scale",
    )
    overfit_lr = 3e-3

    def __init__(
        self,
        input_size: int = 32,
        horizon: int = 8,
        in_features: int = 1,
        out_features: int = 1,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        mase_scale: Sequence[float] | None = None,
        distribution: DistributionName = "none",
        loss: PointLossName = "mse",
        coverage_level: float = 0.9,
        window_norm: bool = False,
        plot_every_n_epochs: int = 10,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if input_size < 1 or horizon < 1 or out_features < 1 or in_features < out_features:
            raise ValueError(
                "input_size, horizon and out_features must be positive and in_features >= out_features, got "
                f"{input_size}, {horizon}, {out_features}, {in_features}"
            )
        if distribution not in ("none", "gaussian"):
            raise ValueError(f"Unknown distribution {distribution!r}; choose 'none' or 'gaussian'.")
        if loss not in ("mse", "mae"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'mse' or 'mae'.")
        if not 0 < coverage_level < 1 or plot_every_n_epochs < 0:
            raise ValueError(f"coverage_level must be in (0, 1) and plot_every_n_epochs >= 0, got {coverage_level}")
        stats = {"target_mean": (target_mean, 0.0), "target_std": (target_std, 1.0), "mase_scale": (mase_scale, 1.0)}
        for name, (values, default) in stats.items():
            values = [default] * out_features if values is None else list(values)
            if len(values) != out_features:
                raise ValueError(f"{name} needs one value per target ({out_features}), got {len(values)}")
            if name != "target_mean" and min(values) <= 0:
                raise ValueError(f"{name} must be positive, got {values}")
            stats[name] = values
        self.input_size, self.horizon, self.in_features, self.out_features = (
            input_size,
            horizon,
            in_features,
            out_features,
        )
        self.distribution = distribution
        self.num_params_per_step = 2 if distribution == "gaussian" else 1
        # Not in the state dict: the hyperparameters rebuild them, so a checkpoint forecasts in original units.
        self.register_buffer("target_center", torch.tensor(stats["target_mean"]), persistent=False)
        self.register_buffer("target_scale", torch.tensor(stats["target_std"]), persistent=False)
        self.interval_z = math.sqrt(2) * torch.erfinv(torch.tensor(coverage_level)).item()  # the normal quantile
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_metrics = self._split_metrics("val", stats["mase_scale"])
        self.test_metrics = self._split_metrics("test", stats["mase_scale"])
        self._plot_buffer: list[tuple[torch.Tensor | None, ...]] = []
        self._plotting = False
        self.example_input_array = torch.zeros(2, input_size, in_features)

    def _split_metrics(self, split: str, mase_scale: list[float]) -> nn.ModuleDict:
        metrics = {"point": point_metrics().clone(prefix=f"{split}/"), "mase": MeanAbsoluteScaledError(mase_scale)}
        metrics["horizon"] = HorizonMAE(self.horizon)
        if self.distribution == "gaussian":
            metrics["coverage"] = IntervalCoverage()
        return nn.ModuleDict(metrics)

    # --- what a model computes (scaled units) --------------------------------------------------------------------
    def forward_params(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, T, P)`` outputs: ``P = 1`` the forecast; ``P = 2`` the mean and an unconstrained scale."""
        raise NotImplementedError

    def forecast(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The forecast ``(B, H, T)`` and, with a Gaussian head, its standard deviation (scaled units)."""
        if not self.hparams.window_norm:
            params = self.forward_params(x)
            scale = F.softplus(params[..., 1]) + MIN_SCALE if self.distribution == "gaussian" else None
            return params[..., 0], scale
        # Each window in its own units (RevIN without the affine part): levels beyond the training span's range
        # reach the network as shapes it has seen; the outputs go back to the window's level and spread.
        center = x.mean(1, keepdim=True)  # (B, 1, F)
        spread = x.std(1, keepdim=True, correction=0).clamp(min=MIN_SCALE)
        params = self.forward_params((x - center) / spread)
        center, spread = center[..., : self.out_features], spread[..., : self.out_features]  # (B, 1, T)
        loc = params[..., 0] * spread + center
        scale = (F.softplus(params[..., 1]) + MIN_SCALE) * spread if self.distribution == "gaussian" else None
        return loc, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The point forecast ``(B, H, T)`` in scaled units."""
        self.check_input(x)
        return self.forecast(x)[0]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape."""
        if x.ndim != 3 or x.shape[1] != self.input_size or x.shape[2] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float features of shape (B, T, {self.in_features}) with T = input_size"
                f" = {self.input_size}, got {x.dtype} {tuple(x.shape)}"
            )

    def to_original(self, scaled: torch.Tensor) -> torch.Tensor:
        """Targets ``(..., T)`` in original units."""
        return scaled * self.target_scale.to(scaled.dtype) + self.target_center.to(scaled.dtype)

    # --- training logic --------------------------------------------------------------------------------------
    def compute_loss(
        self, loc: torch.Tensor, scale: torch.Tensor | None, target: torch.Tensor, observed: torch.Tensor
    ) -> torch.Tensor:
        """The masked mean of the point loss, or of the Gaussian negative log-likelihood (without its constant)."""
        if scale is not None:
            element = scale.log() + 0.5 * ((target - loc) / scale) ** 2
        elif self.hparams.loss == "mae":
            element = (target - loc).abs()
        else:
            element = (target - loc) ** 2
        weight = observed.to(element.dtype)
        return (element * weight).sum() / weight.sum().clamp(min=1)

    def shared_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Loss, forecast and scale (scaled units) of one ``(inputs, targets, observed)`` batch."""
        x, target, observed = batch
        self.check_input(x)
        loc, scale = self.forecast(x)
        return self.compute_loss(loc, scale, target, observed), loc, scale

    def batch_loss(self, batch: Any) -> torch.Tensor:
        return self.shared_step(batch)[0]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        loss = self.shared_step(batch)[0]
        self.train_loss.update(loss.detach())
        self.log_on_logging_steps("train/loss_step", loss.detach())
        return loss if loss.requires_grad else None  # a rule with nothing to train: no optimizer step

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss)

    def configure_optimizers(self) -> Any:
        if not any(param.requires_grad for param in self.parameters()):
            return None  # a baseline without trainable parameters: `fit` only evaluates
        return super().configure_optimizers()

    def _evaluate(self, batch: Any, metrics: nn.ModuleDict, loss_metric: MeanMetric) -> None:
        loss, loc, scale = self.shared_step(batch)
        _, target, observed = batch
        loss_metric.update(loss, weight=observed.sum())
        preds, actual = self.to_original(loc), self.to_original(target)
        metrics["point"].update(preds[observed], actual[observed])
        metrics["mase"].update(preds, actual, observed)
        metrics["horizon"].update(preds, actual, observed)
        lower = upper = None
        if scale is not None:
            half = self.interval_z * scale * self.target_scale.to(scale.dtype)
            lower, upper = preds - half, preds + half
            metrics["coverage"].update(lower, upper, actual, observed)
        if self._plotting:
            parts = (preds, lower, upper, actual, observed)
            self._plot_buffer.append(tuple(None if part is None else part.detach().cpu() for part in parts))

    def _log_split(self, split: str, metrics: nn.ModuleDict, loss_metric: MeanMetric, prog_bar: bool = False) -> None:
        self.log(f"{split}/loss", loss_metric, prog_bar=prog_bar)
        self.log_dict(metrics["point"], prog_bar=prog_bar)
        self.log(f"{split}/mase", metrics["mase"], prog_bar=prog_bar)
        if "coverage" in metrics:
            self.log(f"{split}/coverage", metrics["coverage"])
        by_step = metrics["horizon"].compute()
        metrics["horizon"].reset()
        if split == "test":
            for step, value in enumerate(by_step.tolist(), start=1):
                self.log(f"test/mae_step{step}", value)
        self._log_plot(split, by_step)

    def on_validation_epoch_start(self) -> None:
        self._plotting = self._plot_wanted()

    def on_test_epoch_start(self) -> None:
        self._plotting = self._plot_wanted()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val", self.val_metrics, self.val_loss, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._log_split("test", self.test_metrics, self.test_loss)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        """``forecast`` ``(B, H, T)`` in original units; with a Gaussian head also ``std``, ``lower`` and ``upper``."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        self.check_input(x)
        loc, scale = self.forecast(x)
        out = {"forecast": self.to_original(loc)}
        if scale is not None:
            std = scale * self.target_scale.to(scale.dtype)
            out.update(
                std=std, lower=out["forecast"] - self.interval_z * std, upper=out["forecast"] + self.interval_z * std
            )
        return out

    # --- the predicted-vs-actual plot ------------------------------------------------------------------------------
    def _plot_wanted(self) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or not trainer.is_global_zero:
            return False
        from callbacks._utils import IMAGE_LOGGERS

        if not any(isinstance(logger, IMAGE_LOGGERS) for logger in trainer.loggers):
            return False
        every = self.hparams.plot_every_n_epochs
        return trainer.testing or (bool(every) and (self.current_epoch + 1) % every == 0)

    def _log_plot(self, split: str, by_step: torch.Tensor) -> None:
        if not self._plot_buffer:
            return
        from callbacks._utils import log_image

        parts = list(zip(*self._plot_buffer, strict=True))
        self._plot_buffer.clear()
        preds, lower, upper, actual, observed = (None if p[0] is None else torch.cat(p) for p in parts)
        figure = plot_forecast(preds, actual, observed, lower, upper, by_step, title=f"{type(self).__name__} ({split})")
        log_image(self.trainer, f"{split}/forecast", figure, self.global_step)

    # --- what the shared tests use ------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Noisy sine waves of random period and phase per column: the context, and the targets' continuation."""
        steps = torch.arange(self.input_size + self.horizon, dtype=torch.float32)
        period = 6 + 10 * torch.rand(batch_size, 1, self.in_features, generator=generator)
        phase = 2 * math.pi * torch.rand(batch_size, 1, self.in_features, generator=generator)
        series = torch.sin(2 * math.pi * steps.view(1, -1, 1) / period + phase)  # (B, L + H, F)
        series = series + 0.05 * torch.randn(series.shape, generator=generator)
        target = series[:, self.input_size :, : self.out_features]
        return series[:, : self.input_size], target, torch.ones_like(target, dtype=torch.bool)


def plot_forecast(
    preds: torch.Tensor,
    actual: torch.Tensor,
    observed: torch.Tensor,
    lower: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    by_step: torch.Tensor | None = None,
    title: str = "",
) -> Any:
    """A matplotlib figure of consecutive windows ``(N, H, T)`` (first target): the actual values, the one-step and
    the last-step forecasts with the one-step interval, and (``by_step``) the MAE at each horizon step."""
    from matplotlib.figure import Figure

    preds, actual, observed = preds.float().numpy(), actual.float().numpy(), observed.numpy()
    figure = Figure(figsize=(9, 3.2), layout="constrained")
    series, errors = figure.subplots(1, 2, width_ratios=(3, 1))
    horizon = preds.shape[1]
    origin = np.arange(len(preds))
    truth = np.where(observed[:, 0, 0], actual[:, 0, 0], np.nan)
    series.plot(origin, truth, color="black", lw=1.2, label="actual")
    series.plot(origin, preds[:, 0, 0], lw=1, label="1 step ahead")
    series.plot(origin + horizon - 1, preds[:, -1, 0], lw=1, ls="--", label=f"{horizon} steps ahead")
    if lower is not None and upper is not None:
        low, high = lower[:, 0, 0].float().numpy(), upper[:, 0, 0].float().numpy()
        series.fill_between(origin, low, high, alpha=0.25, lw=0, label="interval (1 step)")
    series.set(xlabel="window (forecast origin)", title=title)
    series.legend(fontsize=7, loc="upper left")
    if by_step is not None:
        errors.bar(np.arange(1, len(by_step) + 1), by_step.float().numpy())
        errors.set(xlabel="horizon step", title="MAE by step")
    return figure
