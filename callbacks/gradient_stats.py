"""Gradient norms, gradient-to-weight ratios and vanishing/exploding gradient warnings."""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from callbacks._utils import log_metrics, tensorboard_loggers


class GradientStatsMonitor(Callback):
    """Log gradient statistics every ``every_n_steps`` optimizer steps, after backward and before the step.

    "Layer" here means one parameter tensor (``net.0.weight`` and ``net.0.bias`` apart): it is the finest grain that
    costs nothing extra, and a bias with a tiny gradient next to a healthy weight is worth seeing. Parameters without
    a gradient (frozen or unused this step) are left out. Norms are taken before gradient clipping. Sharded
    strategies (FSDP, DeepSpeed) would report per-shard norms and are not supported.

    Logged, at the step index of the update they describe:

    - ``grad/norm_total``: L2 norm of all gradients as one vector.
    - ``grad/norm/<param>``: L2 norm of each parameter's gradient (``per_layer=True``).
    - ``grad/ratio/<param>``: that norm divided by the parameter's own L2 norm (skipped for all-zero parameters).
    - ``grad/hist/<param>``: gradient histograms, to TensorBoard loggers only (``log_histograms=True``).

    The first sampled step with a parameter whose gradient norm is below ``vanishing_threshold``, and the first with
    one above ``exploding_threshold`` (or non-finite), each raise one warning naming those parameters.

    Args:
        every_n_steps: Sample one optimizer step in this many.
        per_layer: Also log per-parameter norms and ratios, not only the total.
        log_histograms: Add gradient histograms to TensorBoard loggers.
        vanishing_threshold: A gradient norm below this counts as vanishing.
        exploding_threshold: A gradient norm above this counts as exploding.

    Example:
        >>> GradientStatsMonitor(every_n_steps=50, exploding_threshold=100.0)  # doctest: +ELLIPSIS
        <...GradientStatsMonitor object at ...>
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        per_layer: bool = True,
        log_histograms: bool = False,
        vanishing_threshold: float = 1e-7,
        exploding_threshold: float = 1e3,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be >= 1, got {every_n_steps}")
        if not 0 <= vanishing_threshold < exploding_threshold:
            raise ValueError(
                f"Need 0 <= vanishing_threshold < exploding_threshold, got {vanishing_threshold}, {exploding_threshold}"
            )
        self.every_n_steps = every_n_steps
        self.per_layer = per_layer
        self.log_histograms = log_histograms
        self.vanishing_threshold = vanishing_threshold
        self.exploding_threshold = exploding_threshold
        self._warned_vanishing = False
        self._warned_exploding = False
        # Several optimizers step at one global step (manual optimization): sample the step once.
        self._last_step = -1

    @override
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Optimizer) -> None:
        step = trainer.global_step
        if step % self.every_n_steps != 0 or step == self._last_step:
            return
        named = [(name, p) for name, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        self._last_step = step

        grads = [_dense(p.grad) for _, p in named]
        grad_norms = torch.stack([torch.linalg.vector_norm(g, dtype=_norm_dtype(g)) for g in grads])
        norms = [grad_norms, torch.linalg.vector_norm(grad_norms)[None]]
        if self.per_layer:
            norms.append(torch.stack([torch.linalg.vector_norm(p.detach(), dtype=_norm_dtype(p)) for _, p in named]))
        # One device->host copy for all numbers: (P grad norms, total, P weight norms when per layer).
        values = torch.cat(norms).tolist()
        n = len(named)
        g_norms, total_norm, w_norms = values[:n], values[n], values[n + 1 :]

        metrics = {"grad/norm_total": total_norm}
        if self.per_layer:
            for (name, _), g, w in zip(named, g_norms, w_norms, strict=True):
                metrics[f"grad/norm/{name}"] = g
                if w > 0:
                    metrics[f"grad/ratio/{name}"] = g / w
        log_metrics(trainer, metrics, step)

        if self.log_histograms:
            for logger in tensorboard_loggers(trainer):
                for (name, _), g in zip(named, grads, strict=True):
                    logger.experiment.add_histogram(f"grad/hist/{name}", g.float().cpu(), global_step=step)

        self._check_thresholds([name for name, _ in named], g_norms, step)

    def _check_thresholds(self, names: list[str], norms: list[float], step: int) -> None:
        if not self._warned_vanishing:
            vanishing = [name for name, g in zip(names, norms, strict=True) if g < self.vanishing_threshold]
            if vanishing:
                self._warned_vanishing = True
                rank_zero_warn(
                    f"Vanishing gradients at step {step}: L2 norm < {self.vanishing_threshold:g} for "
                    f"{len(vanishing)} parameter(s): {_short_list(vanishing)}. Check for dead units, saturated "
                    "activations, missing normalization or a too-small init. (Warned once.)"
                )
        if not self._warned_exploding:
            limit = self.exploding_threshold
            exploding = [name for name, g in zip(names, norms, strict=True) if not math.isfinite(g) or g > limit]
            if exploding:
                self._warned_exploding = True
                rank_zero_warn(
                    f"Exploding gradients at step {step}: L2 norm > {self.exploding_threshold:g} or non-finite for "
                    f"{len(exploding)} parameter(s): {_short_list(exploding)}. Lower the learning rate or clip "
                    "gradients (`Trainer(gradient_clip_val=...)`). (Warned once.)"
                )


def _norm_dtype(tensor: Tensor) -> torch.dtype:
    """Norms in float32 at least: half-precision tensors are upcast, float64 ones (``precision=64``) kept."""
    return torch.promote_types(tensor.dtype, torch.float32)


def _dense(grad: Tensor) -> Tensor:
    grad = grad.detach()
    return grad.coalesce().values() if grad.is_sparse else grad


def _short_list(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
