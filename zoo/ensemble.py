"""Checkpoint ensembles: several trained classifiers answering as one, by the mean of their class probabilities.

:class:`CheckpointEnsemble` is a :class:`~zoo.tasks.ClassificationTask` whose network is its members: its ``forward``
returns the log of the (weighted) mean of the members' softmax, so the softmax of its output is that mean and the
first member's loss, metrics and batch handling apply unchanged. ``trainer.test`` logs what one member would
(``test/acc``, ``test/loss``, ...), and ``trainer.predict`` returns the mean probabilities. Averaging probabilities
is the rule of deep ensembles (Lakshminarayanan et al., 2017, "Simple and Scalable Predictive Uncertainty Estimation
using Deep Ensembles").

Example::

    ensemble = zoo.CheckpointEnsemble(["runs/a/last.ckpt", "runs/b/last.ckpt"], weights=[2.0, 1.0])
    L.Trainer().test(ensemble, datamodule=DigitsDataModule())  # test/acc, test/loss, ... of the ensemble
    probabilities = ensemble(images).softmax(-1)  # (B, num_classes): the weighted mean of the members'
"""

from __future__ import annotations

import contextvars
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from typing_extensions import Self

from zoo.checkpoint import data_preprocessing, model_from_checkpoint, read_checkpoint
from zoo.tasks.classification import ClassificationTask

#: The init arguments an ensemble is rebuilt from (the task base's own are its members').
_OWN_ARGUMENTS = ("checkpoints", "weights")


class CheckpointEnsemble(ClassificationTask):
    """Classifier whose class probabilities are the weighted mean of those of several classifier checkpoints.

    The members are read through :func:`zoo.checkpoint.read_checkpoint` (CRC check, ``weights_only=True``, trusted
    classes only) and must be classifiers of one task (image, sequence, tagging, ...) with one ``num_classes`` and
    the same input (what the model and its data's saved preprocessing say of it); different architectures are
    welcome. They are frozen and stay in eval mode (``ensemble.train()`` leaves them so), and, as submodules, on the
    ensemble's device. ``num_classes``, the loss (the first member's ``loss`` and ``label_smoothing``), metrics,
    batch unpacking and preprocessing come from the first member. Nothing trains: ``fit`` only evaluates.

    Args:
        checkpoints: checkpoint files of the members.
        weights: one positive weight per member (normalized to sum to 1); ``None`` weighs them equally.

    Raises:
        ValueError: for no checkpoints, weights that do not fit them, or members that differ in task,
            ``num_classes`` or input (naming both files); the checkpoint readers' errors name a file that is missing,
            damaged or not a classifier's.
    """

    #: The sizes come from the members, not the data (``setup`` checks the datamodule's ``num_classes``).
    data_links = ()

    def __init__(self, checkpoints: Sequence[str], weights: Sequence[float] | None = None) -> None:
        paths = [os.fspath(path) for path in checkpoints]
        if not paths:
            raise ValueError("CheckpointEnsemble needs at least one checkpoint")
        member_weights = [1.0] * len(paths) if weights is None else [float(weight) for weight in weights]
        if len(member_weights) != len(paths):
            raise ValueError(f"got {len(member_weights)} weights for {len(paths)} checkpoints; give one per checkpoint")
        if not all(0 < weight < math.inf for weight in member_weights):  # written so that NaN fails too
            raise ValueError(f"ensemble weights must be positive finite numbers, got {member_weights}")
        # In an empty context: LightningCLI builds the ensemble inside a context variable of hyperparameters that
        # `save_hyperparameters` takes in place of a model's own arguments, which would give the members the
        # ensemble's.
        members = [contextvars.Context().run(_load_member, path) for path in paths]
        first = members[0][0]
        for path, (member, preprocessing) in zip(paths[1:], members[1:], strict=True):
            _check_compatible(path, member, preprocessing, paths[0], first, members[0][1])
        super().__init__(num_classes=first.num_classes)
        # What the model is rebuilt from is its own arguments: the task base's (num_classes, the optimizer, ...)
        # belong to the members, and a rebuild would pass them to an __init__ that does not take them.
        for key in list(self.hparams):
            if key[:1] != "_" and key not in _OWN_ARGUMENTS:
                del self.hparams[key]
        self.members = nn.ModuleList(member for member, _ in members).requires_grad_(False).eval()
        total = sum(member_weights)
        log_weights = torch.tensor([math.log(weight / total) for weight in member_weights])
        self.register_buffer("log_weights", log_weights, persistent=False)  # (M,)
        self.example_input_array = first.example_input_array

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The log of the weighted mean of the members' class probabilities (``(B, C)``, or ``(B, T, C)`` per step),
        what a member's ``forward`` returns in place of its logits."""
        log_probs = torch.stack([member(*inputs).log_softmax(-1) for member in self.members])  # (M, B, [T,] C)
        log_weights = self.log_weights.to(log_probs.dtype).view(-1, *[1] * (log_probs.ndim - 1))  # (M, 1, [1,] 1)
        # log(sum_m w_m p_m) in log space: probabilities far below float precision still count.
        return torch.logsumexp(log_probs + log_weights, dim=0)

    def train(self, mode: bool = True) -> Self:
        """Switch the ensemble's own modules; the members stay in eval mode (dropout off, BatchNorm's running
        statistics), as they score when used alone."""
        super().train(mode)
        self.members.eval()
        return self

    # --- the first member's task: batches, loss, metrics, inputs ---------------------------------------------------
    @property
    def first_member(self) -> ClassificationTask:
        """The member whose task (loss, metrics, batch format, preprocessing) the ensemble takes."""
        return self.members[0]

    def unpack_batch(self, batch: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        return self.first_member.unpack_batch(batch)

    def flatten_outputs(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.first_member.flatten_outputs(logits, target)

    def compute_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.first_member.compute_loss(logits, target)

    def build_metrics(self) -> MetricCollection:
        return self.first_member.build_metrics()

    def update_metrics(self, metrics: MetricCollection, **values: Any) -> None:
        self.first_member.update_metrics(metrics, **values)

    def preprocessing(self) -> dict[str, Any]:
        return self.first_member.preprocessing()

    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> Any:
        return self.first_member.example_batch(batch_size, generator)

    def reset_classifier(self, num_classes: int) -> None:
        raise NotImplementedError("an ensemble has no classifier of its own: fine-tune its members, then ensemble them")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = self.trainer.datamodule
        data_classes = getattr(datamodule, "num_classes", None)
        if isinstance(data_classes, int) and data_classes != self.num_classes:
            raise ValueError(
                f"{type(datamodule).__name__} has num_classes={data_classes}, but the ensemble's members "
                f"({', '.join(self.hparams.checkpoints)}) have num_classes={self.num_classes}"
            )


def _load_member(path: str) -> tuple[ClassificationTask, dict[str, Any] | None]:
    """The classifier of ``path`` and the preprocessing its data saved (``None`` when it saved none)."""
    checkpoint = read_checkpoint(path)
    member = model_from_checkpoint(checkpoint, path)
    if not isinstance(member, ClassificationTask):
        raise ValueError(
            f"{path} holds a {type(member).__name__}, not a classifier (a zoo.ClassificationTask): an ensemble "
            "averages class probabilities"
        )
    return member, data_preprocessing(checkpoint)


def _task_base(model: ClassificationTask) -> type:
    """The task base a classifier's class derives from (``ImageClassifier``, ``SequenceTagger``, ...)."""
    return next(cls for cls in type(model).__mro__ if cls.__module__.startswith("zoo.tasks."))


def _check_compatible(
    path: str,
    member: ClassificationTask,
    preprocessing: dict[str, Any] | None,
    first_path: str,
    first: ClassificationTask,
    first_preprocessing: dict[str, Any] | None,
) -> None:
    """Raise a ValueError naming both files when ``member`` cannot be averaged with ``first``."""
    problems = []
    task, first_task = _task_base(member), _task_base(first)
    if task is not first_task:
        problems.append(f"a {task.__name__} against a {first_task.__name__}")
    if member.num_classes != first.num_classes:
        problems.append(f"num_classes={member.num_classes} against {first.num_classes}")
    if member.preprocessing() != first.preprocessing():
        problems.append(f"input {member.preprocessing()} against {first.preprocessing()}")
    if preprocessing is not None and first_preprocessing is not None and preprocessing != first_preprocessing:
        problems.append(f"data preprocessing {preprocessing} against {first_preprocessing}")
    if problems:
        raise ValueError(
            f"{path} does not fit the ensemble's first member {first_path}: {'; '.join(problems)}. The members of an "
            "ensemble must be classifiers of one task, over the same classes and the same inputs."
        )
