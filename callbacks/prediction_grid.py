"""A grid of predictions on a fixed set of validation images, right ones in green, wrong ones in red."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from callbacks._utils import log_image, model_logits, require_matplotlib, unpack_xy


class PredictionGridLogger(Callback):
    """Log predicted vs true labels of the same ``num_samples`` validation images every ``every_n_epochs`` epochs.

    The images are the first ``num_samples`` of the first validation batch (kept on the CPU); the module's
    ``forward(x)`` must return logits ``(B, C)``. Images ``(C, H, W)`` are shown min-max scaled (1 or 3 channels;
    otherwise the first channel), titled ``pred (true)``.

    Image tag ``val/predictions`` through :func:`log_image`. The last predictions are kept in ``.last_predictions``.

    Args:
        num_samples: Images in the grid.
        every_n_epochs: Log on every this many epochs.
        class_names: Names to print instead of class indices.
        tag: Image name.

    Example:
        >>> PredictionGridLogger(num_samples=16, class_names=["cat", "dog"])  # doctest: +ELLIPSIS
        <...PredictionGridLogger object at ...>
    """

    def __init__(
        self,
        num_samples: int = 16,
        every_n_epochs: int = 1,
        class_names: Sequence[str] | None = None,
        tag: str = "val/predictions",
    ) -> None:
        require_matplotlib(type(self).__name__)
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"`num_samples` and `every_n_epochs` must be >= 1, got {num_samples}, {every_n_epochs}")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.class_names = list(class_names) if class_names is not None else None
        self.tag = tag
        self.samples: tuple[Tensor, Tensor] | None = None
        self.last_predictions: Tensor | None = None

    def unpack_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of a validation batch; override for other batch layouts."""
        x, y = unpack_xy(batch)
        if y is None:
            raise TypeError("PredictionGridLogger needs targets: batches of (x, y), or override `unpack_batch`")
        return x, y

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.samples is None and batch_idx == 0 and dataloader_idx == 0:
            x, y = self.unpack_batch(batch)
            self.samples = (x[: self.num_samples].detach().cpu().clone(), y[: self.num_samples].detach().cpu().clone())

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.samples is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        x, y = self.samples
        preds = model_logits(pl_module, x.to(pl_module.device)).argmax(dim=1).cpu()
        self.last_predictions = preds
        if trainer.is_global_zero:
            log_image(trainer, self.tag, self._draw(x, y, preds, trainer.current_epoch), trainer.global_step)

    def _draw(self, x: Tensor, y: Tensor, preds: Tensor, epoch: int) -> Any:
        from matplotlib.figure import Figure

        n = x.shape[0]
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        fig = Figure(figsize=(1.6 * cols, 1.8 * rows + 0.4))
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i >= n:
                continue
            ax.imshow(_displayable(x[i]), cmap="gray" if x[i].ndim < 3 or x[i].shape[0] != 3 else None)
            right = bool(preds[i] == y[i])
            ax.set_title(f"{self._name(preds[i])} ({self._name(y[i])})", color="green" if right else "red", fontsize=8)
        correct = int((preds == y).sum())
        fig.suptitle(f"epoch {epoch}: {correct}/{n} right", fontsize=10)
        fig.tight_layout()
        return fig

    def _name(self, label: Tensor) -> str:
        index = int(label)
        return self.class_names[index] if self.class_names else str(index)


def _displayable(image: Tensor) -> Any:
    img = image.float()
    if img.ndim == 3:
        img = img.permute(1, 2, 0) if img.shape[0] == 3 else img[0]  # (C, H, W) -> (H, W, 3) or (H, W)
    lo, hi = img.min(), img.max()
    return ((img - lo) / (hi - lo).clamp_min(1e-12)).numpy()
