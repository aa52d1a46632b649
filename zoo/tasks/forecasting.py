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

Validation and test steps return the forecasts in original units (``preds``, ``target``, ``observed`` and, with a
Gaussian head, ``lower``/``upper``), which ``callbacks.ForecastPlotLogger`` draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection

from zoo.metrics import HorizonMAE, IntervalCoverage, MeanAbsoluteScaledError, point_metrics
from zoo.tasks.base import Split, StepOutput, TaskModule

DistributionName = Literal["none", "gaussian"]
PointLossName = Literal["mse", "mae"]
#: The smallest forecast standard deviation (scaled units), so the Gaussian NLL stays finite.
MIN_SCALE = 1e-3


class Forecaster(TaskModule):
    """Task base for forecasters: a subclass implements :meth:`forward_params` (or, for rules, :meth:`forecast`).

    Logs ``{train,val,test}/loss`` and the metrics of the module docstring. ``predict_step`` returns forecasts in
    original units.

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
        if not 0 < coverage_level < 1:
            raise ValueError(f"coverage_level must be in (0, 1), got {coverage_level}")
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
        self.mase_scale = stats["mase_scale"]
        self.example_input_array = torch.zeros(2, input_size, in_features)

    def build_metrics(self) -> MetricCollection:
        metrics = dict(point_metrics().items(), mase=MeanAbsoluteScaledError(self.mase_scale))
        metrics["mae_by_step"] = HorizonMAE(self.horizon)
        if self.distribution == "gaussian":
            metrics["coverage"] = IntervalCoverage()
        return MetricCollection(metrics, compute_groups=False)

    def update_metrics(
        self,
        metrics: MetricCollection,
        preds: torch.Tensor,
        target: torch.Tensor,
        observed: torch.Tensor,
        lower: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
    ) -> None:
        """Point metrics over the observed values, MASE, per-step MAE and coverage over the ``(B, H, T)`` windows."""
        for name in ("mae", "rmse", "mape", "smape"):
            metrics[name].update(preds[observed], target[observed])
        metrics["mase"].update(preds, target, observed)
        metrics["mae_by_step"].update(preds, target, observed)
        if lower is not None and upper is not None:
            metrics["coverage"].update(lower, upper, target, observed)

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        """The loss and metrics; after testing also ``test/mae_step{h}``, the MAE at each horizon step."""
        values = super().epoch_values(split, loss, metrics)
        by_step = values.pop(f"{split}/mae_by_step", None)  # a vector: logged one value per step
        if by_step is not None:
            if split == "test":
                values.update(
                    {f"test/mae_step{h}": value for h, value in enumerate(by_step.compute().tolist(), start=1)}
                )
            by_step.reset()
        return values

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

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "series", "input_size": self.input_size, "in_features": self.in_features}

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

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss (scaled units) of an ``(inputs, targets, observed)`` batch; in evaluation also the forecasts,
        targets and interval in original units."""
        x, target, observed = batch
        self.check_input(x)
        loc, scale = self.forecast(x)
        loss = self.compute_loss(loc, scale, target, observed)
        if split == "train":
            return StepOutput(loss, observed.sum())
        values = {"preds": self.to_original(loc), "target": self.to_original(target), "observed": observed}
        if scale is not None:
            half = self.interval_z * scale * self.target_scale.to(scale.dtype)
            values.update(lower=values["preds"] - half, upper=values["preds"] + half)
        return StepOutput(loss, observed.sum(), values)

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``forecast`` ``(B, H, T)`` in original units; with a Gaussian head also ``std``, ``lower`` and ``upper``."""
        self.check_input(x)
        loc, scale = self.forecast(x)
        out = {"forecast": self.to_original(loc)}
        if scale is not None:
            std = scale * self.target_scale.to(scale.dtype)
            out.update(
                std=std, lower=out["forecast"] - self.interval_z * std, upper=out["forecast"] + self.interval_z * std
            )
        return out

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
