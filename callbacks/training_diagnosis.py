"""End-of-fit diagnosis of the loss curves: overfitting, underfitting, divergence, oscillation, plateau, gap.

The rules are pure functions over per-epoch loss lists, so they can be tried on any history:

>>> find_overfitting(train=[1.0, 0.8, 0.6, 0.4, 0.3], val=[1.0, 0.9, 1.0, 1.1, 1.2], patience=3).name
'overfitting'
>>> find_plateau([1.0, 0.5, 0.5, 0.5, 0.5], patience=3) is not None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from callbacks._utils import log_metrics, tensorboard_loggers

_EPS = 1e-12


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a short ``name`` (also the metric suffix), what was seen, and what to try."""

    name: str
    message: str
    advice: str


def find_divergence(losses: Sequence[float], factor: float = 10.0, label: str = "loss") -> Finding | None:
    """A NaN/Inf loss, or a last loss more than ``factor`` times the lowest one seen."""
    for epoch, value in enumerate(losses):
        if not math.isfinite(value):
            return Finding(
                "divergence",
                f"{label} became {value} at epoch {epoch}.",
                "Lower the learning rate (3-10x), add warmup and gradient clipping (Trainer(gradient_clip_val=1.0)), "
                "prefer bf16 to fp16, and look for bad inputs (NonFiniteGuard names the first bad layer).",
            )
    if len(losses) < 2:
        return None
    best = min(losses)
    if best > 0 and losses[-1] > factor * best:
        return Finding(
            "divergence",
            f"{label} climbed to {losses[-1]:.4g}, {losses[-1] / best:.1f}x its minimum {best:.4g}.",
            "Lower the learning rate (3-10x), add warmup and gradient clipping (Trainer(gradient_clip_val=1.0)).",
        )
    return None


def find_oscillation(
    losses: Sequence[float],
    min_epochs: int = 5,
    min_sign_change_frac: float = 0.5,
    min_path_ratio: float = 3.0,
    label: str = "loss",
) -> Finding | None:
    """The loss goes up and down more than it goes anywhere.

    Fires when at least ``min_sign_change_frac`` of consecutive epoch-to-epoch differences change sign and the
    path length (sum of absolute differences) is at least ``min_path_ratio`` times the net change.
    """
    if len(losses) < min_epochs:
        return None
    diffs = [b - a for a, b in pairwise(losses)]
    changes = sum(1 for d0, d1 in pairwise(diffs) if d0 * d1 < 0)
    frac = changes / (len(diffs) - 1)
    path = sum(abs(d) for d in diffs)
    net = abs(losses[-1] - losses[0])
    if frac >= min_sign_change_frac and path >= min_path_ratio * max(net, _EPS) and path > 0:
        return Finding(
            "oscillation",
            f"{label} changed direction in {changes} of {len(diffs) - 1} epochs and moved {path:.3g} in total "
            f"for a net change of {net:.3g}.",
            "The learning rate is likely too high: lower it, add a decaying schedule (cosine) or warmup, or use a "
            "larger batch.",
        )
    return None


def find_overfitting(train: Sequence[float], val: Sequence[float], patience: int = 3) -> Finding | None:
    """Validation loss has risen above its best for at least ``patience`` epochs while training loss kept falling.

    ``train`` and ``val`` hold one value per epoch, aligned.
    """
    _check_aligned(train, val)
    if len(val) < patience + 1:
        return None
    best = min(range(len(val)), key=val.__getitem__)
    since = len(val) - 1 - best
    if since >= patience and val[-1] > val[best] and train[-1] < train[best]:
        return Finding(
            "overfitting",
            f"val loss rose from {val[best]:.4g} (epoch {best}) to {val[-1]:.4g} over {since} epochs while train "
            f"loss fell from {train[best]:.4g} to {train[-1]:.4g}.",
            "Keep the best epoch (ModelCheckpoint / EarlyStopping on val/loss) and regularize: more data or "
            "augmentation, weight decay, dropout, label smoothing, or a smaller model.",
        )
    return None


def find_underfitting(
    train: Sequence[float], val: Sequence[float] | None = None, min_rel_improvement: float = 0.1, min_epochs: int = 3
) -> Finding | None:
    """Training (and validation, when given) loss improved by less than ``min_rel_improvement`` since epoch 0."""
    if len(train) < min_epochs:
        return None
    series = {"train": train} if val is None else {"train": train, "val": val}
    gains = {name: (s[0] - s[-1]) / max(abs(s[0]), _EPS) for name, s in series.items()}
    if all(gain < min_rel_improvement for gain in gains.values()):
        shown = ", ".join(f"{name} {100 * gain:.1f}%" for name, gain in gains.items())
        return Finding(
            "underfitting",
            f"Loss barely moved in {len(train)} epochs (improvement since epoch 0: {shown}).",
            "Check that one batch can be overfitted (Trainer(overfit_batches=1)); then try a higher learning rate "
            "(LR finder), a larger model, longer training, and inspect inputs and labels (normalization, alignment).",
        )
    return None


def find_plateau(losses: Sequence[float], patience: int = 5, tol: float = 1e-3, label: str = "loss") -> Finding | None:
    """The best loss of the last ``patience`` epochs is less than ``tol`` (relative) below the best before."""
    if len(losses) <= patience:
        return None
    before, recent = min(losses[:-patience]), min(losses[-patience:])
    gain = (before - recent) / max(abs(before), _EPS)
    if gain < tol:
        return Finding(
            "plateau",
            f"{label} improved by {100 * gain:.2f}% in the last {patience} epochs (best {recent:.4g}).",
            "Decay the learning rate (ReduceLROnPlateau, cosine) or stop earlier: more epochs at this rate do not "
            "help.",
        )
    return None


def find_generalization_gap(train: Sequence[float], val: Sequence[float], max_ratio: float = 1.5) -> Finding | None:
    """The last validation loss is more than ``max_ratio`` times the last training loss (aligned lists)."""
    _check_aligned(train, val)
    if not train or train[-1] <= 0:
        return None
    ratio = val[-1] / train[-1]
    if ratio > max_ratio:
        return Finding(
            "generalization_gap",
            f"val loss {val[-1]:.4g} is {ratio:.2f}x the train loss {train[-1]:.4g}.",
            "Regularize (augmentation, weight decay, dropout) and check that train and val share the same "
            "distribution and preprocessing.",
        )
    return None


def diagnose(
    train: Sequence[float],
    val: Sequence[float] | None = None,
    overfit_patience: int = 3,
    plateau_patience: int = 5,
    plateau_tol: float = 1e-3,
    underfit_min_improvement: float = 0.1,
    divergence_factor: float = 10.0,
    gap_ratio: float = 1.5,
    oscillation_min_epochs: int = 5,
) -> list[Finding]:
    """All findings for aligned per-epoch ``train`` and ``val`` losses (either may be empty).

    A non-finite loss makes every other rule meaningless, so divergence is then the only finding. Plateau is left
    out when overfitting or underfitting already explain the flat curve.
    """
    val = list(val or [])
    train = list(train)
    curves = [(label, s) for label, s in (("train loss", train), ("val loss", val)) if s]
    for label, series in curves:
        if not all(math.isfinite(v) for v in series):
            finding = find_divergence(series, divergence_factor, label)
            return [finding] if finding else []

    findings = [find_divergence(series, divergence_factor, label) for label, series in curves]
    if curves:
        label, series = curves[0]  # LR trouble shows first in the training loss
        findings.append(find_oscillation(series, oscillation_min_epochs, label=label))
    paired = len(train) == len(val) and len(train) > 0
    if paired:
        findings.append(find_overfitting(train, val, overfit_patience))
        findings.append(find_generalization_gap(train, val, gap_ratio))
    if train:
        findings.append(find_underfitting(train, val if paired else None, underfit_min_improvement))
    found = {f.name for f in findings if f}
    if curves and not found & {"overfitting", "underfitting"}:
        label, series = curves[-1]  # the monitored curve: val when there is one
        findings.append(find_plateau(series, plateau_patience, plateau_tol, label))
    return [f for f in findings if f is not None]


def format_findings(findings: Sequence[Finding]) -> str:
    """Human-readable report, one paragraph per finding."""
    if not findings:
        return "Training diagnosis: no problems found in the loss curves."
    lines = [f"Training diagnosis: {len(findings)} finding(s)."]
    for f in findings:
        lines.append(f"- {f.name}: {f.message}\n  Advice: {f.advice}")
    return "\n".join(lines)


class TrainingDiagnosis(Callback):
    """Record per-epoch train and val losses during fit and report :func:`diagnose` findings at the end.

    Losses are read from ``trainer.callback_metrics``: validation after each validation run (``on_validation_end``,
    so values logged in ``on_validation_epoch_end`` count), training at the start of the next epoch or at the end of
    training (so values logged in the module's ``on_train_epoch_end`` count). The first present key of
    ``train_keys``/``val_keys`` is used. The rules needing both curves use the epochs that have both.

    At the end of fit the report is printed on rank zero, kept in ``.findings``, and logged: ``diagnosis/<name>``
    = 1 per finding and ``diagnosis/num_findings`` to every logger, plus the report as text to TensorBoard.
    The history survives resuming from a checkpoint.

    Args:
        train_keys: Candidate names of the epoch-level training loss, first present wins.
        val_keys: Candidate names of the validation loss, first present wins.
        overfit_patience: Epochs of rising val loss for :func:`find_overfitting`.
        plateau_patience: Window of :func:`find_plateau`.
        plateau_tol: Relative improvement below which :func:`find_plateau` fires.
        underfit_min_improvement: Relative improvement since epoch 0 below which :func:`find_underfitting` fires.
        divergence_factor: :func:`find_divergence` fires above this multiple of the minimum.
        gap_ratio: :func:`find_generalization_gap` fires when val/train exceeds this.
        oscillation_min_epochs: Epochs needed before :func:`find_oscillation` judges.

    Example:
        >>> TrainingDiagnosis(val_keys=("val/loss",), plateau_patience=3)  # doctest: +ELLIPSIS
        <...TrainingDiagnosis object at ...>
    """

    def __init__(
        self,
        train_keys: Sequence[str] = ("train/loss", "train/loss_epoch", "train_loss", "loss"),
        val_keys: Sequence[str] = ("val/loss", "val/loss_epoch", "val_loss"),
        overfit_patience: int = 3,
        plateau_patience: int = 5,
        plateau_tol: float = 1e-3,
        underfit_min_improvement: float = 0.1,
        divergence_factor: float = 10.0,
        gap_ratio: float = 1.5,
        oscillation_min_epochs: int = 5,
    ) -> None:
        if isinstance(train_keys, str) or isinstance(val_keys, str) or not train_keys or not val_keys:
            raise ValueError("`train_keys` and `val_keys` must be non-empty sequences of metric names")
        if overfit_patience < 1 or plateau_patience < 1 or oscillation_min_epochs < 3:
            raise ValueError("Patiences must be >= 1 and `oscillation_min_epochs` >= 3")
        if plateau_tol < 0 or underfit_min_improvement < 0:
            raise ValueError("`plateau_tol` and `underfit_min_improvement` must be >= 0")
        if divergence_factor <= 1 or gap_ratio <= 1:
            raise ValueError("`divergence_factor` and `gap_ratio` must be > 1")
        self.train_keys = tuple(train_keys)
        self.val_keys = tuple(val_keys)
        self.rule_args = {
            "overfit_patience": overfit_patience,
            "plateau_patience": plateau_patience,
            "plateau_tol": plateau_tol,
            "underfit_min_improvement": underfit_min_improvement,
            "divergence_factor": divergence_factor,
            "gap_ratio": gap_ratio,
            "oscillation_min_epochs": oscillation_min_epochs,
        }
        #: ``{"train": {epoch: loss}, "val": {epoch: loss}}``
        self.history: dict[str, dict[int, float]] = {"train": {}, "val": {}}
        self.findings: list[Finding] = []
        self._pending_train_epoch: int | None = None

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer, "val", self.val_keys, trainer.current_epoch)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The module's own on_train_epoch_end (where epoch losses are often logged) runs after this hook.
        self._pending_train_epoch = trainer.current_epoch

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_train(trainer)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush_train(trainer)
        train, val = self.curves()
        self.findings = diagnose(train, val, **self.rule_args)
        report = format_findings(self.findings)
        rank_zero_info(report)
        metrics = {f"diagnosis/{f.name}": 1.0 for f in self.findings}
        metrics["diagnosis/num_findings"] = float(len(self.findings))
        log_metrics(trainer, metrics, trainer.global_step)
        for logger in tensorboard_loggers(trainer):
            logger.experiment.add_text("diagnosis", report.replace("\n", "  \n"), global_step=trainer.global_step)

    def curves(self) -> tuple[list[float], list[float]]:
        """Train and val losses on the epochs that have both, or the train curve alone when val was never seen."""
        train, val = self.history["train"], self.history["val"]
        if not val:
            return [train[e] for e in sorted(train)], []
        if not train:
            return [], [val[e] for e in sorted(val)]
        epochs = sorted(train.keys() & val.keys())
        return [train[e] for e in epochs], [val[e] for e in epochs]

    def _flush_train(self, trainer: L.Trainer) -> None:
        if self._pending_train_epoch is not None:
            self._record(trainer, "train", self.train_keys, self._pending_train_epoch)
            self._pending_train_epoch = None

    def _record(self, trainer: L.Trainer, split: str, keys: Sequence[str], epoch: int) -> None:
        value = _lookup(trainer.callback_metrics, keys)
        if value is not None:
            self.history[split][epoch] = value

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": {split: dict(h) for split, h in self.history.items()}}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {split: dict(h) for split, h in state_dict["history"].items()}


def _lookup(metrics: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        if key in metrics:
            return float(metrics[key])
    return None


def _check_aligned(train: Sequence[float], val: Sequence[float]) -> None:
    if len(train) != len(val):
        raise ValueError(f"train and val must hold one value per epoch each, got {len(train)} and {len(val)}")
