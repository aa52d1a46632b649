"""Callbacks that Lightning does not ship, and the default set the recipes use.

Weight averaging is Lightning's own ``WeightAveraging``/``EMAWeightAveraging``; ``StochasticWeightAveraging`` here is
Lightning's with its BatchNorm-update epoch fixed (see ``callbacks/averaging.py`` and
``tests/test_callbacks_averaging.py`` for what each guarantees).
"""

from __future__ import annotations

from typing import Literal

from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)

from callbacks._utils import log_image
from callbacks.activation_stats import ActivationStatsMonitor
from callbacks.attention_maps import AttentionMapLogger
from callbacks.averaging import StochasticWeightAveraging
from callbacks.confusion_matrix import ConfusionMatrixLogger
from callbacks.exact_resume import ExactResume
from callbacks.fast_path import FastPath, cpu_has_native_bf16
from callbacks.feature_maps import FeatureMapLogger
from callbacks.gradient_stats import GradientStatsMonitor
from callbacks.lr_schedule import LRScheduleLogger
from callbacks.nonfinite_guard import NonFiniteError, NonFiniteGuard
from callbacks.prediction_grid import PredictionGridLogger
from callbacks.profiler import NullProfiler
from callbacks.progress import RichProgressBar
from callbacks.pruning import ScheduledPruning
from callbacks.training_diagnosis import Finding, TrainingDiagnosis, diagnose

__all__ = [
    "ActivationStatsMonitor",
    "AttentionMapLogger",
    "ConfusionMatrixLogger",
    "ExactResume",
    "FastPath",
    "FeatureMapLogger",
    "Finding",
    "GradientStatsMonitor",
    "LRScheduleLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "NullProfiler",
    "PredictionGridLogger",
    "RichProgressBar",
    "ScheduledPruning",
    "StochasticWeightAveraging",
    "TrainingDiagnosis",
    "checkpoint_filename",
    "cpu_has_native_bf16",
    "default_callbacks",
    "diagnose",
    "last_checkpoint",
    "log_image",
]


def checkpoint_filename(monitor: str) -> str:
    """``ModelCheckpoint`` filename with the epoch and ``monitor``: ``epoch=003-val_acc=0.9120``.

    A "/" in a checkpoint name would make a folder, so the metric is spelled with "_" in the name only.
    """
    return "epoch={epoch:03d}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}"


def last_checkpoint() -> ModelCheckpoint:
    """``last.ckpt``, overwritten with the latest state after every epoch: the file to resume from."""
    return ModelCheckpoint(filename="last", enable_version_counter=False)


def default_callbacks(
    monitor: str = "val/acc", mode: Literal["min", "max"] = "max", patience: int = 10
) -> list[Callback]:
    """The callbacks every recipe starts from.

    The best checkpoint on ``monitor`` (``epoch=003-val_acc=0.9120.ckpt``) and ``last.ckpt``, rewritten after every
    epoch (Lightning's ``save_last`` writes it only when the best one changes, so it lags after the last
    improvement), early stopping on ``monitor``, a :class:`NonFiniteGuard` that skips any update with a NaN/Inf loss
    or gradient (stopping with an error after 20 in a row or on non-finite weights), the random generators'
    states and the loader's position in every checkpoint (:class:`ExactResume`), per-step learning rates, a Rich
    progress bar and gradient statistics every 50 steps.

    Example:
        >>> [type(cb).__name__ for cb in default_callbacks("val/loss", mode="min")]  # doctest: +NORMALIZE_WHITESPACE
        ['ModelCheckpoint', 'ModelCheckpoint', 'EarlyStopping', 'NonFiniteGuard', 'ExactResume',
         'LearningRateMonitor', 'RichProgressBar', 'GradientStatsMonitor']
    """
    if not monitor:
        raise ValueError("`monitor` must name a logged metric, e.g. 'val/acc'")
    if mode not in ("min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
    if patience < 0:
        raise ValueError(f"`patience` must be >= 0, got {patience}")
    return [
        ModelCheckpoint(
            monitor=monitor, mode=mode, filename=checkpoint_filename(monitor), auto_insert_metric_name=False
        ),
        last_checkpoint(),
        # Checked after validation only: a run that stops mid-epoch (max_steps) or has no validation must not fail.
        EarlyStopping(monitor=monitor, mode=mode, patience=patience, check_on_train_epoch_end=False),
        NonFiniteGuard(action="skip", max_consecutive_skips=20),
        ExactResume(),
        LearningRateMonitor(logging_interval="step"),
        # Redrawn every 10 batches: drawing on every step costs as much as a small model's step.
        RichProgressBar(refresh_rate=10),
        GradientStatsMonitor(every_n_steps=50),
    ]
