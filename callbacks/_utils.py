"""Helpers shared by the callbacks: metric and image logging to whatever loggers the Trainer has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning_utilities.core.imports import RequirementCache
from torch import Tensor
from torchvision.utils import make_grid

_MATPLOTLIB_AVAILABLE = RequirementCache("matplotlib")

IMAGE_LOGGERS = (TensorBoardLogger, WandbLogger, MLFlowLogger)


def require_matplotlib(owner: str) -> None:
    """Raise a clear error at construction when a plotting callback cannot plot."""
    if not _MATPLOTLIB_AVAILABLE:
        raise ModuleNotFoundError(f"{owner} draws with matplotlib: `pip install matplotlib`. {_MATPLOTLIB_AVAILABLE}")


def log_metrics(trainer: L.Trainer, metrics: Mapping[str, float], step: int) -> None:
    """Send scalars straight to every logger of the trainer.

    ``LightningModule.log(on_step=True)`` only reaches the loggers on steps that are multiples of
    ``Trainer(log_every_n_steps)``, which would silently drop numbers sampled on a callback's own schedule.
    The built-in loggers are rank-zero only, so calling this on every rank is safe.
    """
    if not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(dict(metrics), step=step)


def to_image_array(image: Any) -> np.ndarray:
    """Convert a figure, tensor or array into an ``(H, W, C)`` uint8 array.

    Tensors are read as ``(C, H, W)`` or ``(H, W)`` (torch convention), numpy arrays as ``(H, W, C)`` or ``(H, W)``;
    float values are taken to lie in ``[0, 1]``. A matplotlib figure is rendered and closed.
    """
    if _is_figure(image):
        return _render_figure(image)
    if isinstance(image, Tensor):
        array = image.detach().float().cpu() if image.is_floating_point() else image.detach().cpu()
        if array.ndim == 3:
            array = array.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        array = array.numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"Expected an image of shape (C, H, W), (H, W, C) or (H, W), got {tuple(array.shape)}")
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def log_image(trainer: L.Trainer, tag: str, image_or_figure: Any, step: int) -> int:
    """Log one image to each TensorBoard, W&B and MLflow logger of the trainer; other loggers are skipped.

    Args:
        trainer: The trainer whose ``loggers`` receive the image.
        tag: Image name, e.g. ``"val/confusion_matrix"``.
        image_or_figure: A matplotlib figure (closed afterwards), a ``(C, H, W)`` tensor or an ``(H, W, C)`` array.
        step: The global step to file the image under.

    Returns:
        How many loggers received the image.
    """
    loggers = [logger for logger in trainer.loggers if isinstance(logger, IMAGE_LOGGERS)]
    if not loggers:
        if _is_figure(image_or_figure):
            _close_figure(image_or_figure)
        return 0
    array = to_image_array(image_or_figure)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, array, global_step=step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[array], step=step)
        else:
            # `artifact_file` works on every MLflow version the project allows (key/step arrived in 2.12).
            logger.experiment.log_image(logger.run_id, array, artifact_file=f"{tag}/step_{step:07d}.png")
    return len(loggers)


def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
    """The trainer's TensorBoard loggers (histograms and text have no common API elsewhere)."""
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def unpack_xy(batch: Any) -> tuple[Tensor, Tensor | None]:
    """Split an ``(x, y, ...)`` batch or a ``{"x": ..., "y": ...}`` dict; ``y`` is ``None`` when absent."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        for x_key, y_key in (("x", "y"), ("input", "target"), ("image", "label")):
            if x_key in batch:
                return batch[x_key], batch.get(y_key)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], y
    raise TypeError(
        f"Cannot find inputs in a batch of type {type(batch).__name__}: expected (x, y) or a dict with 'x'/'y'. "
        "Subclass the callback and override `unpack_batch`."
    )


def model_logits(pl_module: L.LightningModule, x: Tensor) -> Tensor:
    """Run the module on ``x`` without gradients; its forward must return class logits ``(B, C)``."""
    with torch.no_grad():
        out = pl_module(x)
    if isinstance(out, Mapping) and "logits" in out:
        out = out["logits"]
    if not isinstance(out, Tensor):
        raise TypeError(f"Expected forward(x) to return logits as a Tensor, got {type(out).__name__}")
    return out


def _is_figure(obj: Any) -> bool:
    return type(obj).__module__.startswith("matplotlib") and hasattr(obj, "savefig")


def _render_figure(fig: Any) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    _close_figure(fig)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()  # (H, W, RGBA) -> (H, W, RGB)


def _close_figure(fig: Any) -> None:
    import sys

    # Figures from pyplot (e.g. torchmetrics' `.plot()` without `ax`) stay alive in pyplot's registry until closed.
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)


def image_grid(images: Tensor, per_row: int) -> Tensor:
    """``(N, C, H, W)`` images in [0, 1] as one ``(3, H', W')`` grid of ``per_row`` columns (1 or 3 channels; the
    first channel of others)."""
    if images.shape[1] not in (1, 3):
        images = images[:, :1]
    return make_grid(images.clamp(0, 1), nrow=per_row, padding=2, pad_value=1.0)
