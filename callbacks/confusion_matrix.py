"""Validation confusion matrix as an image, for any classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix
from typing_extensions import override

from callbacks._utils import log_image, model_logits, require_matplotlib, unpack_xy


class ConfusionMatrixLogger(Callback):
    """Accumulate the validation confusion matrix and log it as an image every ``every_n_epochs`` epochs.

    Predictions come from ``validation_step``'s return value when it is a dict with ``"preds"`` (logits ``(B, C)`` or
    labels ``(B,)``) and ``"target"``; otherwise the callback runs ``pl_module(x)`` on each ``(x, y)`` validation batch
    itself, which costs one extra forward per batch on the epochs it logs. Only the first validation dataloader
    counts. The matrix is synced across processes (torchmetrics) and drawn on rank zero.

    Image tag ``val/confusion_matrix`` (rows: target, columns: prediction), sent through :func:`log_image` to
    TensorBoard, W&B and MLflow loggers. The last matrix is kept in ``.last_matrix``.

    Args:
        num_classes: Number of classes.
        every_n_epochs: Log on every this many epochs.
        normalize: ``"true"`` (rows sum to 1), ``"pred"``, ``"all"`` or ``"none"`` (counts).
        class_names: Axis labels, one per class.
        tag: Image name.

    Example:
        >>> ConfusionMatrixLogger(num_classes=10, normalize="true")  # doctest: +ELLIPSIS
        <...ConfusionMatrixLogger object at ...>
    """

    def __init__(
        self,
        num_classes: int,
        every_n_epochs: int = 1,
        normalize: Literal["true", "pred", "all", "none"] = "none",
        class_names: Sequence[str] | None = None,
        tag: str = "val/confusion_matrix",
    ) -> None:
        require_matplotlib(type(self).__name__)
        if num_classes < 2:
            raise ValueError(f"`num_classes` must be >= 2, got {num_classes}")
        if every_n_epochs < 1:
            raise ValueError(f"`every_n_epochs` must be >= 1, got {every_n_epochs}")
        if normalize not in ("true", "pred", "all", "none"):
            raise ValueError(f"`normalize` must be 'true', 'pred', 'all' or 'none', got {normalize!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"Got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.normalize = normalize
        self.class_names = list(class_names) if class_names is not None else None
        self.tag = tag
        self.matrix = MulticlassConfusionMatrix(num_classes, normalize=normalize)
        self.last_matrix: Tensor | None = None
        self._active = False

    def unpack_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of a validation batch; override for other batch layouts."""
        x, y = unpack_xy(batch)
        if y is None:
            raise TypeError("ConfusionMatrixLogger needs targets: batches of (x, y), or override `unpack_batch`")
        return x, y

    @override
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._active = not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if self._active:
            self.matrix = self.matrix.to(pl_module.device)
            self.matrix.reset()

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
        if not self._active or dataloader_idx != 0:
            return
        if isinstance(outputs, Mapping) and "preds" in outputs and "target" in outputs:
            preds, target = outputs["preds"], outputs["target"]
        else:
            x, target = self.unpack_batch(batch)
            preds = model_logits(pl_module, x)
        self.matrix.update(preds.detach(), target.detach())

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active:
            return
        self._active = False
        if self.matrix.update_count == 0:
            return
        matrix = self.matrix.compute()  # a collective under DDP: every rank calls it
        self.last_matrix = matrix.cpu()
        if trainer.is_global_zero:
            from matplotlib.figure import Figure

            side = min(12.0, 2.0 + 0.5 * self.num_classes)
            fig = Figure(figsize=(side, side))
            ax = fig.add_subplot()
            self.matrix.plot(val=self.last_matrix, ax=ax, labels=self.class_names, add_text=self.num_classes <= 20)
            ax.set_title(f"{self.tag} (epoch {trainer.current_epoch})")
            log_image(trainer, self.tag, fig, trainer.global_step)
        self.matrix.reset()
