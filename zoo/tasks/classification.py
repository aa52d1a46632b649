"""Classification task base: the loss, metrics and predictions of any model that outputs class logits.

:class:`ClassificationTask` is shared by image classification, sequence classification and sequence tagging; a
subclass says how a batch becomes model inputs and targets (:meth:`~ClassificationTask.unpack_batch`) and, for
per-step outputs, which positions count (:meth:`~ClassificationTask.flatten_outputs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from zoo.layers.losses import focal_loss
from zoo.metrics import classification_metrics
from zoo.tasks.base import Split, StepOutput, TaskModule

LossName = Literal["ce", "focal"]


class ClassificationTask(TaskModule):
    """Task base for models whose output is class logits; subclasses build the network.

    Logs ``{train,val,test}/loss`` (``train/loss_step`` on logging steps), ``/acc``, ``/acc_top5`` (more than 5
    classes) and ``/f1`` (macro) per epoch. Targets may be class indices or class probabilities (mixup/cutmix);
    metrics then use the most likely class.

    Args:
        num_classes: number of output classes.
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/acc", "max")
    data_links = ("num_classes",)
    metric_splits = ("train", "val", "test")

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

    def build_metrics(self) -> MetricCollection:
        return classification_metrics(self.num_classes)

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
            self.configure_metrics()

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

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss, and the flat logits and hard targets the metrics update with."""
        inputs, target = self.unpack_batch(batch)
        logits, target = self.flatten_outputs(self(*inputs), target)
        try:
            loss = self.compute_loss(logits, target)
        except (IndexError, RuntimeError):
            self.check_target(target)  # checked only on failure: the range check would sync every step
            raise
        hard_target = target.argmax(-1) if target.is_floating_point() else target
        return StepOutput(loss, target.shape[0], {"preds": logits.detach(), "target": hard_target})

    def predict_batch(self, batch: Any) -> torch.Tensor:
        """Class probabilities (``(B, num_classes)``, or per step ``(B, T, num_classes)``)."""
        if not isinstance(batch, (tuple, list)):
            inputs = (batch,)
        else:  # `(x,)` from a TensorDataset of inputs alone, or a training-form batch
            inputs = (batch[0],) if len(batch) == 1 else self.unpack_batch(batch)[0]
        return self(*inputs).softmax(-1)

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"probabilities": self(x).softmax(-1)}

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """The ``top_k`` classes with their probabilities and names, per sample; per step for taggers (``tags``)."""
        probabilities = outputs["probabilities"].float()
        names = preprocessing.get("classes")
        k = max(1, min(top_k, probabilities.shape[-1]))
        values, indices = probabilities.topk(k, dim=-1)

        def entry(index: int, value: float) -> dict[str, Any]:
            return {"index": index, "class": names[index] if names else None, "probability": value}

        answers = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
            if probabilities.ndim == 3:  # (T, k) per step: the most likely tag of each
                answers.append({"tags": [entry(i[0], v[0]) for v, i in zip(row_values, row_indices, strict=True)]})
            else:
                top = [entry(i, v) for i, v in zip(row_indices, row_values, strict=True)]
                answers.append({**top[0], "top_k": top})
        return answers
