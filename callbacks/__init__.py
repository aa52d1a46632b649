"""Callbacks that Lightning does not ship, and the default set the recipes use.

Weight averaging is Lightning's own ``WeightAveraging``/``EMAWeightAveraging``; ``StochasticWeightAveraging`` here is
Lightning's with its BatchNorm-update epoch fixed (see ``callbacks/averaging.py`` and
``tests/test_callbacks_averaging.py`` for what each guarantees).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import instantiate_class

from callbacks._utils import log_image
from callbacks.activation_stats import ActivationStatsMonitor
from callbacks.attention_maps import AttentionMapLogger
from callbacks.averaging import StochasticWeightAveraging
from callbacks.caption_attention import CaptionAttentionLogger, draw_caption_attention
from callbacks.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError
from callbacks.confusion_matrix import ConfusionMatrixLogger
from callbacks.denoising_panels import DenoisingPanelLogger
from callbacks.exact_resume import ExactResume
from callbacks.fast_path import FastPath, cpu_has_native_bf16
from callbacks.feature_maps import FeatureMapLogger
from callbacks.forecast_plot import ForecastPlotLogger
from callbacks.gradient_stats import GradientStatsMonitor
from callbacks.lookahead import Lookahead
from callbacks.lr_schedule import LRScheduleLogger
from callbacks.nonfinite_guard import NonFiniteError, NonFiniteGuard
from callbacks.portable_checkpoint import PortableModelCheckpoint
from callbacks.prediction_grid import PredictionGridLogger
from callbacks.profiler import NullProfiler
from callbacks.progress import RichProgressBar
from callbacks.pruning import ScheduledPruning
from callbacks.reconstruction_grid import ReconstructionGridLogger
from callbacks.training_diagnosis import Finding, TrainingDiagnosis, diagnose

__all__ = [
    "DEFAULTS_YAML",
    "DEFAULT_MONITOR",
    "ActivationStatsMonitor",
    "AtomicCheckpointIO",
    "AttentionMapLogger",
    "CaptionAttentionLogger",
    "CheckpointWriteError",
    "ConfusionMatrixLogger",
    "DenoisingPanelLogger",
    "ExactResume",
    "FastPath",
    "FeatureMapLogger",
    "Finding",
    "ForecastPlotLogger",
    "GradientStatsMonitor",
    "LRScheduleLogger",
    "Lookahead",
    "NonFiniteError",
    "NonFiniteGuard",
    "NullProfiler",
    "PortableModelCheckpoint",
    "PredictionGridLogger",
    "ReconstructionGridLogger",
    "RichProgressBar",
    "ScheduledPruning",
    "StochasticWeightAveraging",
    "TrainingDiagnosis",
    "checkpoint_filename",
    "cpu_has_native_bf16",
    "default_callback_specs",
    "default_callbacks",
    "diagnose",
    "draw_caption_attention",
    "follow_monitor",
    "log_image",
]


#: The default callbacks as config (``trainer.callbacks``), read by :func:`default_callbacks` and the recipes' CLI.
DEFAULTS_YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults.yaml")
#: The metric the default checkpoint and early-stopping callbacks watch in ``defaults.yaml``.
DEFAULT_MONITOR = "val/acc"


def checkpoint_filename(monitor: str) -> str:
    """``ModelCheckpoint`` filename with the epoch and ``monitor``: ``epoch=003-val_acc=0.9120``.

    A "/" in a checkpoint name would make a folder, so the metric is spelled with "_" in the name only.
    """
    return "epoch={epoch:03d}-" + monitor.replace("/", "_") + "={" + monitor + ":.4f}"


def default_callback_specs(monitor: str = DEFAULT_MONITOR, mode: Literal["min", "max"] = "max") -> list[dict[str, Any]]:
    """The ``class_path``/``init_args`` of the default callbacks (``defaults.yaml``), watching ``monitor``."""
    with open(DEFAULTS_YAML) as handle:
        specs = yaml.safe_load(handle)["trainer"]["callbacks"]
    for spec in specs:
        follow_monitor(spec, monitor, mode)
    return specs


def follow_monitor(spec: dict[str, Any], monitor: str, mode: Literal["min", "max"]) -> None:
    """Point a checkpoint or early-stopping spec that watches :data:`DEFAULT_MONITOR` at ``monitor`` instead."""
    args = spec.get("init_args") or {}
    if args.get("monitor") != DEFAULT_MONITOR or monitor == DEFAULT_MONITOR:
        return
    args["monitor"], args["mode"] = monitor, mode
    if args.get("filename") == checkpoint_filename(DEFAULT_MONITOR):
        args["filename"] = checkpoint_filename(monitor)


def default_callbacks(
    monitor: str = DEFAULT_MONITOR, mode: Literal["min", "max"] = "max", patience: int = 10
) -> list[Callback]:
    """The callbacks every recipe starts from (``callbacks/defaults.yaml``).

    The best checkpoint on ``monitor`` (``epoch=003-val_acc=0.9120.ckpt``) and ``last.ckpt``, rewritten after every
    epoch (Lightning's ``save_last`` writes it only when the best one changes, so it lags after the last
    improvement), early stopping on ``monitor``, a :class:`NonFiniteGuard` that skips any update with a NaN/Inf loss
    or gradient (stopping with an error after 20 in a row or on non-finite weights), the random generators'
    states and the loader's position in every checkpoint (:class:`ExactResume`), per-step learning rates, a Rich
    progress bar and gradient statistics every 50 steps.

    Example:
        >>> [type(cb).__name__ for cb in default_callbacks("val/loss", mode="min")]  # doctest: +NORMALIZE_WHITESPACE
        ['PortableModelCheckpoint', 'PortableModelCheckpoint', 'EarlyStopping', 'NonFiniteGuard', 'ExactResume',
         'LearningRateMonitor', 'RichProgressBar', 'GradientStatsMonitor']
    """
    if not monitor:
        raise ValueError("`monitor` must name a logged metric, e.g. 'val/acc'")
    if mode not in ("min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max', got {mode!r}")
    if patience < 0:
        raise ValueError(f"`patience` must be >= 0, got {patience}")
    built = []
    for spec in default_callback_specs(monitor, mode):
        init = dict(spec.get("init_args") or {})
        if "patience" in init:
            init["patience"] = patience
        built.append(instantiate_class((), {"class_path": spec["class_path"], "init_args": init}))
    return built
