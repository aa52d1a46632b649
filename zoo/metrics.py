"""Metrics the tasks use beyond torchmetrics' own: classification sets, and forecasting errors over observed values.

Each is a torchmetrics ``Metric`` (states summed over ranks under DDP) or a collection of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import (
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    Metric,
    MetricCollection,
    SymmetricMeanAbsolutePercentageError,
)
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score


def classification_metrics(num_classes: int) -> MetricCollection:
    """Top-1 accuracy, top-5 accuracy (when there are more than 5 classes) and macro F1."""
    # validate_args=False: the input checks (torch.unique over the targets) cost more than the update itself.
    metrics = {
        "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
        "f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
    }
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro", validate_args=False)
    # No compute groups: torchmetrics merges metrics whose states are equal after the first update, which wrongly
    # fuses top-5 accuracy with macro F1 whenever the first batch is classified perfectly.
    return MetricCollection(metrics, compute_groups=False)


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
