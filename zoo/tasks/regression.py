"""Regression task base: real targets ``y = f(x)`` from feature vectors, errors in original units.

Batches are ``(x, y)``: features ``(B, F)`` in original units and targets ``(B, T)`` standardized by the data
(``datamodules.RegressionDataModule``). The features' and targets' statistics are hyperparameters linked from the
data, so the model standardizes its own input and a checkpoint alone predicts in original units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from zoo.tasks.base import Split, StepOutput, TaskModule

RegressionLoss = Literal["mse", "mae", "huber"]


def _stat(values: Sequence[float] | None, default: float, size: int, name: str) -> torch.Tensor:
    values = [default] * size if values is None else list(values)
    if len(values) != size:
        raise ValueError(f"{name} needs {size} values, got {len(values)}")
    return torch.tensor(values, dtype=torch.float32)


class Regressor(TaskModule):
    """Task base for regression; a subclass builds the network and implements :meth:`forward_scaled`.

    Logs ``{train,val,test}/loss`` (standardized units) and ``/mse``, ``/mae`` and ``/r2`` (original units, averaged
    over targets). ``forward`` and ``predict_step`` answer in original units.

    Args:
        in_features: features per sample ``F`` (from the data).
        out_features: targets per sample ``T`` (from the data).
        feature_mean: each feature's mean, subtracted before the network (from the data; default 0).
        feature_std: each feature's standard deviation, divided by (from the data; default 1).
        target_mean: each target's mean (from the data; default 0).
        target_std: each target's standard deviation (from the data; default 1).
        loss: ``"mse"``, ``"mae"`` or ``"huber"`` (smooth L1 with ``beta=1``), in standardized units.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/mae", "min")
    data_links: ClassVar[tuple[str, ...]] = (
        "in_features",
        "out_features",
        "feature_mean",
        "feature_std",
        "target_mean",
        "target_std",
    )
    metric_splits = ("train", "val", "test")

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        feature_mean: Sequence[float] | None = None,
        feature_std: Sequence[float] | None = None,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        loss: RegressionLoss = "mse",
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be positive, got {in_features} and {out_features}")
        if loss not in ("mse", "mae", "huber"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'mse', 'mae' or 'huber'.")
        self.in_features, self.out_features = in_features, out_features
        # Buffers, not saved: the hyperparameters rebuild them.
        for buffer, name, values, default, size in (
            ("feature_center", "feature_mean", feature_mean, 0.0, in_features),
            ("feature_scale", "feature_std", feature_std, 1.0, in_features),
            ("target_center", "target_mean", target_mean, 0.0, out_features),
            ("target_scale", "target_std", target_std, 1.0, out_features),
        ):
            self.register_buffer(buffer, _stat(values, default, size, name), persistent=False)
        if (self.feature_scale <= 0).any() or (self.target_scale <= 0).any():
            raise ValueError("feature_std and target_std must be positive")
        self.example_input_array = torch.zeros(2, in_features)

    def build_metrics(self) -> MetricCollection:
        r2 = R2Score(multioutput="uniform_average") if self.out_features > 1 else R2Score()
        return MetricCollection({"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": r2}, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, preds: torch.Tensor, target: torch.Tensor) -> None:
        if self.out_features == 1:  # R2Score reads (N,) as one output, (N, T) as T outputs
            preds, target = preds.squeeze(1), target.squeeze(1)
        metrics.update(preds, target)

    # --- what a model computes ---------------------------------------------------------------------------------
    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        """The network: standardized features ``(B, F)`` -> standardized targets ``(B, T)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Targets ``(B, T)`` in original units from features ``(B, F)`` in original units."""
        return self.to_original(self.forward_scaled(self.standardize(x)))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape and dtype."""
        if x.ndim != 2 or x.shape[1] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float features of shape (B, {self.in_features}), got {x.dtype} "
                f"{tuple(x.shape)}"
            )

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Features in the units the network reads: ``(x - feature_mean) / feature_std``."""
        self.check_input(x)
        return (x - self.feature_center) / self.feature_scale

    def to_original(self, scaled: torch.Tensor) -> torch.Tensor:
        """Targets ``(..., T)`` from standardized to original units."""
        return scaled * self.target_scale + self.target_center

    # --- the loop's parts ----------------------------------------------------------------------------------------
    def compute_loss(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss between standardized predictions and targets."""
        if self.hparams.loss == "mae":
            return F.l1_loss(preds, target)
        if self.hparams.loss == "huber":
            return F.smooth_l1_loss(preds, target)
        return F.mse_loss(preds, target)

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss in standardized units; predictions and targets in original units for the metrics."""
        x, target = batch
        if target.shape != (x.shape[0], self.out_features):
            raise ValueError(f"targets must have shape ({x.shape[0]}, {self.out_features}), got {tuple(target.shape)}")
        preds = self.forward_scaled(self.standardize(x))
        loss = self.compute_loss(preds, target)
        values = {"preds": self.to_original(preds.detach()), "target": self.to_original(target)}
        return StepOutput(loss, x.shape[0], values)

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets ``(B, T)`` in original units (``prediction``) from features in original units."""
        return {"prediction": self(x)}

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "features", "in_features": self.in_features}

    # --- what the shared tests use ---------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random features and standardized targets that are a smooth function of them."""
        x = torch.randn(batch_size, self.in_features, generator=generator)
        y = torch.sin(x.sum(1, keepdim=True)) * torch.arange(1, self.out_features + 1)  # (B, T)
        return x * self.feature_scale + self.feature_center, y
