"""Image-classification task base: loss, metrics per split, logging and prediction for any image classifier.

An architecture subclasses :class:`ImageClassifier` and implements ``forward_features``, ``forward_head`` and
``reset_classifier``; how it trains is defined here once.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from zoo.layers.losses import focal_loss
from zoo.tasks.base import TaskModule

LossName = Literal["ce", "focal"]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


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


class ImageClassifier(TaskModule):
    """Task base for image classification; subclasses build the network.

    Logs ``train/loss`` (every ``log_every_n_steps`` and per epoch), and per epoch ``{train,val,test}/acc``,
    ``/acc_top5`` (more than 5 classes), ``/f1`` (macro) and ``{val,test}/loss``. Targets may be class indices
    ``(B,)`` or class probabilities ``(B, C)`` (mixup/cutmix); metrics then use the most likely class.

    Args:
        num_classes: number of output classes.
        in_channels: channels of the input images.
        img_size: input height and width (an int for square images).
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/acc", "max")
    #: Whether the network needs exactly ``img_size`` (e.g. an MLP) or accepts any spatial size (global pooling).
    fixed_input_size: bool = True
    #: Training batches whose outputs are gathered before one update of the train metrics.
    metric_update_interval: int = 32

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        loss: LossName = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if loss not in ("ce", "focal"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'ce' or 'focal'.")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.img_size = _pair(img_size)
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)
        self._build_metrics(num_classes)

    def _build_metrics(self, num_classes: int) -> None:
        metrics = classification_metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.train_loss = MeanMetric()
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    # --- the network contract (timm's model API) -------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` before the classifier."""
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` from pooled features."""
        return self.get_classifier()(features)

    def get_classifier(self) -> nn.Module:
        """The final layer that maps features to logits."""
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialized one for ``num_classes`` (fine-tuning)."""
        old = self.get_classifier()
        self.head = nn.Linear(old.in_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        self.hparams["num_classes"] = num_classes
        if num_classes > 0:
            self._build_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``x`` does not fit the network."""
        channels, (height, width) = self.in_channels, self.img_size
        ok = x.ndim == 4 and x.shape[1] == channels
        if ok and self.fixed_input_size:
            ok = tuple(x.shape[2:]) == (height, width)
        if not ok:
            spatial = f"{height}, {width}" if self.fixed_input_size else "H, W"
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {channels}, {spatial}), got {tuple(x.shape)}"
            )

    # --- training logic ----------------------------------------------------------------------------------
    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss; ``target`` holds class indices or class probabilities."""
        hp = self.hparams
        if hp.loss == "focal":
            return focal_loss(logits, target, hp.focal_gamma, hp.label_smoothing)
        return F.cross_entropy(logits, target, label_smoothing=hp.label_smoothing)

    def shared_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, logits and hard targets of one batch."""
        x, target = batch
        logits = self(x)
        loss = self.compute_loss(logits, target)
        hard_target = target.argmax(-1) if target.ndim == 2 else target
        return loss, logits.detach(), hard_target

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, logits, target = self.shared_step(batch)
        # Metric updates cost a fixed Python overhead each, far more than a small model's step: collect the
        # outputs and update once per `metric_update_interval` batches. The epoch's values are the same (sums).
        self._pending.append((loss.detach(), logits, target))
        if len(self._pending) >= self.metric_update_interval:
            self._update_train_metrics()
        self.log_on_logging_steps("train/loss_step", loss.detach())
        return loss

    def _update_train_metrics(self) -> None:
        if self._pending:
            losses, logits, targets = zip(*self._pending, strict=True)
            self._pending.clear()
            self.train_metrics.update(torch.cat(logits), torch.cat(targets))
            self.train_loss.update(torch.stack(losses))  # the mean of per-batch losses, as Lightning's on_epoch

    def on_train_epoch_end(self) -> None:
        self._update_train_metrics()
        self.log("train/loss", self.train_loss)
        self.log_dict(self.train_metrics)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, target = self.shared_step(batch)
        self.val_metrics.update(logits, target)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=target.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, logits, target = self.shared_step(batch)
        self.test_metrics.update(logits, target)
        self.log("test/loss", loss, on_epoch=True, batch_size=target.shape[0])

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: torch.Tensor | tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)``; accepts ``x`` or ``(x, target)`` batches."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)
