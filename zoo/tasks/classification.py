"""Classification task base: loss, metrics per split, logging and prediction for any model that outputs class logits.

:class:`ClassificationTask` is shared by image classification, sequence classification and sequence tagging; a
subclass says how a batch becomes model inputs and targets (:meth:`~ClassificationTask.unpack_batch`) and, for
per-step outputs, which positions count (:meth:`~ClassificationTask.flatten_outputs`).
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


class ClassificationTask(TaskModule):
    """Task base for models whose output is class logits; subclasses build the network.

    Logs ``train/loss`` (per epoch; ``train/loss_step`` on logging steps), and per epoch ``{train,val,test}/acc``,
    ``/acc_top5`` (more than 5 classes), ``/f1`` (macro) and ``{val,test}/loss``. Targets may be class indices or
    class probabilities (mixup/cutmix); metrics then use the most likely class.

    Args:
        num_classes: number of output classes.
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/acc", "max")
    data_links = ("num_classes",)
    #: Training batches whose outputs are gathered before one update of the train metrics.
    metric_update_interval: int = 32
    #: ... or fewer, once the gathered logits hold this many elements (per-step outputs are large).
    metric_buffer_elements: int = 1 << 22

    def __init__(
        self,
        num_classes: int = 10,
        loss: LossName = "ce",
        label_smoothing: float = 0.0,
        focal_gamma: float = 2.0,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if loss not in ("ce", "focal"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'ce' or 'focal'.")
        self.num_classes = num_classes
        self._build_metrics(num_classes)

    def _build_metrics(self, num_classes: int) -> None:
        metrics = classification_metrics(num_classes)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Losses are torchmetrics objects like the metrics: under DDP every logged value covers every rank's samples
        # (a plateau schedule and early stopping then decide the same on all ranks).
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_elements = 0

    # --- the classifier contract (timm's model API) ----------------------------------------------------------
    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from features (``(B, num_features)``, or ``(B, T, num_features)`` per step)."""
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

    # --- how a batch reaches the network (subclasses override) --------------------------------------------------
    def unpack_batch(self, batch: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The network's positional inputs and the target of a batch; here ``(x, target)``."""
        x, target = batch
        return (x,), target

    def flatten_outputs(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C)`` logits and ``(N,)``/``(N, C)`` targets of the positions that count (all, here)."""
        return logits, target

    # --- training logic ----------------------------------------------------------------------------------
    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The configured loss; ``target`` holds class indices or class probabilities."""
        hp = self.hparams
        if hp.loss == "focal":
            return focal_loss(logits, target, hp.focal_gamma, hp.label_smoothing)
        return F.cross_entropy(logits, target, label_smoothing=hp.label_smoothing)

    def check_target(self, target: torch.Tensor) -> None:
        """Raise a ValueError naming the valid range when a class index is out of it."""
        if not target.is_floating_point() and target.numel():
            low, high = int(target.min()), int(target.max())
            if low < 0 or high >= self.num_classes:
                raise ValueError(
                    f"{type(self).__name__} has num_classes={self.num_classes}: targets must be in "
                    f"[0, {self.num_classes - 1}], got values in [{low}, {high}]"
                )

    def shared_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, flat logits and hard targets of one batch."""
        inputs, target = self.unpack_batch(batch)
        logits, target = self.flatten_outputs(self(*inputs), target)
        try:
            loss = self.compute_loss(logits, target)
        except (IndexError, RuntimeError):
            self.check_target(target)  # checked only on failure: the range check would sync every step
            raise
        hard_target = target.argmax(-1) if target.is_floating_point() else target
        return loss, logits.detach(), hard_target

    def batch_loss(self, batch: Any) -> torch.Tensor:
        return self.shared_step(batch)[0]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, logits, target = self.shared_step(batch)
        # Metric updates cost a fixed Python overhead each, far more than a small model's step: collect the
        # outputs and update once per `metric_update_interval` batches (or sooner when they grow large). The
        # epoch's values are the same (sums).
        self._pending.append((loss.detach(), logits, target))
        self._pending_elements += logits.numel()
        if len(self._pending) >= self.metric_update_interval or self._pending_elements >= self.metric_buffer_elements:
            self._update_train_metrics()
        self.log_on_logging_steps("train/loss_step", loss.detach())
        return loss

    def _update_train_metrics(self) -> None:
        if self._pending:
            losses, logits, targets = zip(*self._pending, strict=True)
            self._pending.clear()
            self._pending_elements = 0
            self.train_metrics.update(torch.cat(logits), torch.cat(targets))
            self.train_loss.update(torch.stack(losses))  # the mean of per-batch losses, as Lightning's on_epoch

    def on_train_epoch_end(self) -> None:
        self._update_train_metrics()
        self.log("train/loss", self.train_loss)
        self.log_dict(self.train_metrics)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, target = self.shared_step(batch)
        self.val_metrics.update(logits, target)
        self.val_loss.update(loss, weight=target.shape[0])

    def on_validation_epoch_end(self) -> None:
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, target = self.shared_step(batch)
        self.test_metrics.update(logits, target)
        self.test_loss.update(loss, weight=target.shape[0])

    def on_test_epoch_end(self) -> None:
        self.log("test/loss", self.test_loss)
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities (``(B, num_classes)``, or per step ``(B, T, num_classes)``)."""
        if not isinstance(batch, (tuple, list)):
            inputs = (batch,)
        else:  # `(x,)` from a TensorDataset of inputs alone, or a training-form batch
            inputs = (batch[0],) if len(batch) == 1 else self.unpack_batch(batch)[0]
        return self(*inputs).softmax(-1)
