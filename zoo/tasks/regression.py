"""Regression task bases: real targets ``y = f(x)`` from feature vectors, errors in original units.

Batches are ``(x, y)``: features ``(B, F)`` in original units and targets ``(B, T)`` standardized by the data
(``datamodules.RegressionDataModule``). The features' and targets' statistics are hyperparameters linked from the
data, so the model standardizes its own input and a checkpoint alone predicts in original units.
:class:`SequenceRegressor` does the same for a target at every step of a sequence (a sequence denoiser).
"""

from __future__ import annotations

import math
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


class SequenceRegressor(Regressor):
    """Regression of every step of a sequence: ``(B, T, F)`` in, ``(B, T, T_out)`` out (a sequence denoiser).

    Built on :class:`Regressor` rather than a new task or the image :class:`~zoo.tasks.Denoiser`: a per-step target
    is a regression target, so the data's statistics (``data_links``), the standardized loss, the metrics in
    original units (``mse``, ``mae``, ``r2``) and ``val/mae`` as monitor are the same; what differs is the shape
    (a time axis) and the padding, handled here by flattening the valid steps into regression samples. The image
    denoiser's noise model, PSNR and pixel range do not fit a float series with a clean target per step.

    Batches are ``(x, target[, lengths])``: ``x`` ``(B, T, F)`` in original units, ``target`` ``(B, T, T_out)``
    standardized, steps after ``lengths[b]`` left out of loss and metrics (``datamodules.NoisySinesDataModule``).
    Besides the regression metrics, every split logs ``mse_input``: the MSE of the input's first ``T_out`` columns
    taken as the prediction (for a denoiser the noisy signal itself, the baseline to beat). A network implements
    ``forward_scaled(x, lengths=None)``.

    Args:
        in_features: features per step (from the data).
        out_features: targets per step (from the data).
        max_length: the longest sequence accepted (from the data; 0: any length).
        **task_args: the data's statistics, loss, optimizer and schedule, see :class:`Regressor`.
    """

    data_links: ClassVar[tuple[str, ...]] = (*Regressor.data_links, "max_length")
    overfit_lr = 1e-2  # small recurrent nets, as for the sequence classifiers

    def __init__(self, in_features: int = 1, out_features: int = 1, max_length: int = 0, **task_args: Any) -> None:
        super().__init__(in_features=in_features, out_features=out_features, **task_args)
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self.max_length = max_length
        self.example_steps = max_length if 0 < max_length <= 32 else 16
        self.example_input_array = torch.zeros(2, self.example_steps, in_features)

    def build_metrics(self) -> MetricCollection:
        metrics = super().build_metrics()
        if self.in_features >= self.out_features:
            metrics.add_metrics({"mse_input": MeanSquaredError()})
        return metrics

    def update_metrics(
        self, metrics: MetricCollection, preds: torch.Tensor, target: torch.Tensor, noisy: torch.Tensor | None = None
    ) -> None:
        """Regression metrics over the valid steps ``(N, T_out)``; ``mse_input`` of the noisy input."""
        squeeze = self.out_features == 1  # R2Score reads (N,) as one output
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            source = noisy if name.endswith("mse_input") else preds
            metric.update(source.squeeze(1) if squeeze else source, target.squeeze(1) if squeeze else target)

    def forward_scaled(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The network: standardized ``(B, T, F)`` -> standardized ``(B, T, T_out)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T, T_out)`` in original units from ``(B, T, F)`` in original units (steps after a length: unused)."""
        self.check_lengths(x, lengths)
        return self.to_original(self.forward_scaled(self.standardize(x), lengths))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape and dtype."""
        if x.ndim != 3 or x.shape[2] != self.in_features or not x.is_floating_point() or x.shape[1] == 0:
            raise ValueError(
                f"{type(self).__name__} expects float features of shape (B, T, {self.in_features}) with T >= 1, got "
                f"{x.dtype} {tuple(x.shape)}"
            )
        if self.max_length and x.shape[1] > self.max_length:
            raise ValueError(
                f"{type(self).__name__} takes at most max_length={self.max_length} steps, got {x.shape[1]}"
            )

    def check_lengths(self, x: torch.Tensor, lengths: torch.Tensor | None) -> None:
        """Raise a ValueError unless ``lengths`` is ``None`` or ``(B,)`` in ``[1, T]``."""
        if lengths is None:
            return
        if lengths.shape != x.shape[:1]:
            raise ValueError(f"lengths must have shape ({x.shape[0]},), got {tuple(lengths.shape)}")
        low, high = torch.stack(lengths.aminmax()).tolist()  # one transfer
        if low < 1 or high > x.shape[1]:
            raise ValueError(f"every length must be in [1, T={x.shape[1]}], got values in [{low}, {high}]")

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss over valid steps (standardized units); predictions, targets and the noisy input in original units
        for the metrics, as ``(N, T_out)`` rows of the valid steps."""
        x, target, lengths = batch if len(batch) == 3 else (*batch, None)
        if target.shape != (*x.shape[:2], self.out_features):
            raise ValueError(f"targets must have shape {(*x.shape[:2], self.out_features)}, got {tuple(target.shape)}")
        self.check_lengths(x, lengths)
        preds = self.forward_scaled(self.standardize(x), lengths)  # (B, T, T_out)
        if lengths is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            valid = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1)  # (B, T)
        preds, target = preds[valid], target[valid]  # (N, T_out)
        values = {"preds": self.to_original(preds.detach()), "target": self.to_original(target)}
        if self.in_features >= self.out_features:
            values["noisy"] = x[valid][:, : self.out_features]
        return StepOutput(self.compute_loss(preds, target), valid.sum(), values)

    def predict_batch(self, batch: Any) -> torch.Tensor:
        """``(B, T, T_out)`` in original units of a batch ``x`` or ``(x, target[, lengths])``."""
        if isinstance(batch, torch.Tensor):
            return self(batch)
        return self(batch[0], batch[2] if len(batch) == 3 else None)

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "series", "in_features": self.in_features}

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Noisy sines of varied lengths (the input's first columns) and their clean values (standardized)."""
        steps = torch.arange(self.example_steps, dtype=torch.float32)
        period = 6 + 10 * torch.rand(batch_size, 1, self.out_features, generator=generator)
        phase = 2 * math.pi * torch.rand(batch_size, 1, self.out_features, generator=generator)
        clean = torch.sin(2 * math.pi * steps.view(1, -1, 1) / period + phase)  # (B, T, T_out)
        x = torch.randn(batch_size, self.example_steps, self.in_features, generator=generator)
        columns = min(self.in_features, self.out_features)
        x[..., :columns] = clean[..., :columns] + 0.1 * x[..., :columns]
        lengths = torch.randint(
            max(1, self.example_steps // 2), self.example_steps + 1, (batch_size,), generator=generator
        )
        lengths[0] = self.example_steps
        return x * self.feature_scale + self.feature_center, clean, lengths
