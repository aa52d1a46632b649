"""Classification task base: the loss, metrics and predictions of any model that outputs class logits.

:class:`ClassificationTask` is shared by image classification, sequence classification and sequence tagging; a
subclass says how a batch becomes model inputs and targets (:meth:`~ClassificationTask.unpack_batch`) and, for
per-step outputs, which positions count (:meth:`~ClassificationTask.flatten_outputs`).

Any classifier also trains as the student of a teacher checkpoint (knowledge distillation, Hinton et al. 2015,
"Distilling the Knowledge in a Neural Network"): ``teacher_checkpoint`` names a classifier trained on the same data,
and the training loss becomes ``(1 - w) * hard-label loss + w * T^2 * KL(softmax(teacher / T) || softmax(student /
T))``. The ``T^2`` keeps the soft part's gradients on the scale of the hard part's whatever the temperature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection

from zoo.checkpoint import load_from_checkpoint
from zoo.layers.losses import focal_loss
from zoo.metrics import classification_metrics
from zoo.tasks.base import Split, StepOutput, TaskModule

LossName = Literal["ce", "focal"]
#: The parts of a distilled training loss, logged per epoch as ``train/<part>``.
DISTILL_PARTS = ("loss_hard", "loss_distill")


class ClassificationTask(TaskModule):
    """Task base for models whose output is class logits; subclasses build the network.

    Logs ``{train,val,test}/loss`` (``train/loss_step`` on logging steps), ``/acc``, ``/acc_top5`` (more than 5
    classes) and ``/f1`` (macro) per epoch. Targets may be class indices or class probabilities (mixup/cutmix);
    metrics then use the most likely class.

    With ``teacher_checkpoint``, training distills the teacher into this model (see the module docstring) and also
    logs ``train/loss_hard`` and ``train/loss_distill`` (the two parts before weighting; ``train/loss`` is their
    weighted sum); validation and test losses stay the hard-label loss. The teacher is read when fitting starts
    (:meth:`distillation_teacher`), never at init, and is no submodule: it is in none of this model's parameters,
    ``state_dict`` or checkpoints, so a student's checkpoint loads without the teacher's file. It must take the
    same batches as the student (trained on the same datamodule).

    Args:
        num_classes: number of output classes.
        loss: ``"ce"`` (cross-entropy) or ``"focal"``.
        label_smoothing: label smoothing for either loss.
        focal_gamma: focusing parameter of the focal loss.
        teacher_checkpoint: a checkpoint of a classifier of the same ``num_classes`` to distill; ``None`` trains on
            the labels alone.
        distill_temperature: the temperature ``T`` both models' logits are divided by in the distillation part.
        distill_weight: the weight ``w`` of the distillation part, in ``[0, 1]``.
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
        teacher_checkpoint: str | None = None,
        distill_temperature: float = 4.0,
        distill_weight: float = 0.5,
        **optim_args: Any,
    ) -> None:
        super().__init__(**optim_args)
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if loss not in ("ce", "focal"):
            raise ValueError(f"Unknown loss {loss!r}; choose 'ce' or 'focal'.")
        if teacher_checkpoint is not None and not str(teacher_checkpoint):
            raise ValueError("teacher_checkpoint must be a checkpoint path or None, got an empty string")
        if not 0 < distill_temperature < math.inf:  # written so that NaN fails too
            raise ValueError(f"distill_temperature must be a positive finite number, got {distill_temperature}")
        if not 0 <= distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
        self.num_classes = num_classes
        # Set by distillation_teacher, outside nn.Module's registry (see there).
        self._teacher: ClassificationTask | None = None
        if teacher_checkpoint is not None:
            self.train_loss_hard, self.train_loss_distill = MeanMetric(), MeanMetric()

    def build_metrics(self) -> MetricCollection:
        return classification_metrics(self.num_classes)

    def update_metrics(self, metrics: MetricCollection, **values: Any) -> None:
        """Update the metrics; the parts of a distilled loss (training only) go to their own means."""
        for part in DISTILL_PARTS:
            if part in values:
                getattr(self, f"train_{part}").update(values.pop(part))
        if values:  # none from batches with no class to score (mixed images, see ImageClassifier)
            metrics.update(**values)

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        values = super().epoch_values(split, loss, metrics)
        if split == "train" and self.hparams.get("teacher_checkpoint") is not None:
            values.update({f"train/{part}": getattr(self, f"train_{part}") for part in DISTILL_PARTS})
        return values

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

    def distillation_loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``T^2 * KL(softmax(teacher_logits / T) || softmax(logits / T))``, averaged over the rows of the ``(N, C)``
        logits (``T``: ``distill_temperature``)."""
        temperature = self.hparams.get("distill_temperature", 4.0)
        log_student = F.log_softmax(logits / temperature, dim=-1)
        log_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
        kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
        return kl * temperature**2

    def distillation_teacher(self) -> ClassificationTask | None:
        """The teacher of ``teacher_checkpoint`` (``None`` without one): read once, on the first call (when fitting
        starts), through :func:`zoo.checkpoint.load_from_checkpoint`; frozen, in eval mode, on this model's device.

        It is kept outside ``nn.Module``'s registry of submodules, so that it stays out of this model's parameters,
        ``state_dict``, checkpoints and train/eval switches.

        Raises:
            FileNotFoundError: when the file is missing.
            ValueError: naming the file when it is unreadable or holds no classifier of this ``num_classes``.
        """
        path = self.hparams.get("teacher_checkpoint")
        if path is None:
            return None
        teacher = self._teacher
        if teacher is None:
            with torch.random.fork_rng(devices=[]):  # building the model draws initial weights: keep the run's stream
                teacher = load_from_checkpoint(path)
            if not isinstance(teacher, ClassificationTask):
                raise ValueError(f"teacher_checkpoint {path} holds a {type(teacher).__name__}, not a classifier")
            if teacher.num_classes != self.num_classes:
                raise ValueError(
                    f"teacher_checkpoint {path} has num_classes={teacher.num_classes}, but {type(self).__name__} "
                    f"has num_classes={self.num_classes}: a teacher must score the student's classes"
                )
            teacher.requires_grad_(False)
            self.__dict__["_teacher"] = teacher  # not self._teacher = ...: that would register a submodule
        if teacher.device != self.device or teacher.dtype != self.dtype:
            teacher.to(device=self.device, dtype=self.dtype)
        return teacher

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.distillation_teacher()  # a missing or unfit teacher fails before the first batch

    def step_logits(self, inputs: tuple[torch.Tensor, ...], split: Split) -> torch.Tensor:
        """The logits :meth:`step` scores in ``split``: the forward's (an image classifier averages test-time
        augmentations at test)."""
        return self(*inputs)

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The loss, and the flat logits and hard targets the metrics update with (in training with a teacher, the
        distilled loss, and its two parts for logging)."""
        inputs, target = self.unpack_batch(batch)
        logits, flat_target = self.flatten_outputs(self.step_logits(inputs, split), target)
        try:
            loss = self.compute_loss(logits, flat_target)
        except (IndexError, RuntimeError):
            self.check_target(flat_target)  # checked only on failure: the range check would sync every step
            raise
        hard_target = flat_target.argmax(-1) if flat_target.is_floating_point() else flat_target
        size = flat_target.shape[0]
        values = {"preds": logits.detach(), "target": hard_target}
        teacher = self.distillation_teacher() if split == "train" else None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits, _ = self.flatten_outputs(teacher(*inputs), target)
            soft = self.distillation_loss(logits, teacher_logits)
            weight = self.hparams.distill_weight
            # Each part as a batch-first tensor of `size` copies: the epoch's mean is then weighted by the batch
            # sizes, as the epoch's train/loss is.
            values.update(loss_hard=loss.detach().expand(size), loss_distill=soft.detach().expand(size))
            loss = (1 - weight) * loss + weight * soft
        return StepOutput(loss, size, values)

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
