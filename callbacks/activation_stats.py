"""Activation statistics: mean, std, dead rectifier units and saturated tanh/sigmoid outputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from callbacks._utils import log_metrics

#: Activations whose units can die: output > 0 exactly when the input is > 0 (PReLU: while its slope is >= 0).
RECTIFIERS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
)
DEFAULT_MODULE_TYPES: tuple[type[nn.Module], ...] = (*RECTIFIERS, nn.Tanh, nn.Sigmoid)


@dataclass
class _LayerStats:
    kind: str  # "rectifier", "tanh", "sigmoid" or "other"
    # Running moments stay device tensors until the window closes: no host sync per forward.
    count: int = 0
    mean: float | Tensor = 0.0
    m2: float | Tensor = 0.0  # sum of squared deviations from the mean
    saturated: int | Tensor = 0
    # "Ever active" mask per unit count: a module applied at several widths (a shared ReLU) keeps one mask each.
    ever_active: dict[int, Tensor] = field(default_factory=dict)


class ActivationStatsMonitor(Callback):
    """Watch the outputs of activation modules over a window of ``window`` training batches every ``every_n_steps``.

    Forward hooks exist only while a window is open, so idle steps cost nothing; they are removed at the end of each
    window and on teardown. Only modules are seen: functional calls (``F.relu``) are invisible. Validation forwards
    in the middle of a window are ignored. A module called several times per forward is reported as one layer.

    Logged at the optimizer step where the window opened (``<layer>`` is the module's name in the LightningModule):

    - ``act/mean/<layer>``, ``act/std/<layer>``: mean and (population) std of all outputs in the window.
    - ``act/dead_frac/<layer>`` (rectifiers): fraction of units never > 0 over the window. A unit is one index of
      dimension ``unit_dim`` of the output (a channel of ``(B, C, H, W)``, a feature of ``(B, F)``); pass
      ``unit_dim=-1`` for ``(B, T, F)`` sequence models.
    - ``act/saturation_frac/<layer>`` (tanh, sigmoid): fraction of outputs with ``|tanh| > tanh_saturation``, or
      sigmoid below ``sigmoid_saturation`` or above ``1 - sigmoid_saturation``.

    Args:
        every_n_steps: Open a window every this many optimizer steps.
        window: Training batches per window; at most ``every_n_steps``.
        module_types: Module classes to watch; defaults to :data:`DEFAULT_MODULE_TYPES`.
        unit_dim: Output dimension that indexes units for the dead-unit count.
        tanh_saturation: ``|tanh|`` above this is saturated.
        sigmoid_saturation: Sigmoid within this distance of 0 or 1 is saturated.

    Example:
        >>> ActivationStatsMonitor(every_n_steps=100, window=10)  # doctest: +ELLIPSIS
        <...ActivationStatsMonitor object at ...>
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        window: int = 10,
        module_types: Sequence[type[nn.Module]] | None = None,
        unit_dim: int = 1,
        tanh_saturation: float = 0.99,
        sigmoid_saturation: float = 0.01,
    ) -> None:
        if every_n_steps < 1 or window < 1:
            raise ValueError(f"`every_n_steps` and `window` must be >= 1, got {every_n_steps} and {window}")
        if window > every_n_steps:
            raise ValueError(f"`window` ({window}) must not exceed `every_n_steps` ({every_n_steps})")
        module_types = tuple(DEFAULT_MODULE_TYPES if module_types is None else module_types)
        if not module_types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in module_types):
            raise ValueError(f"`module_types` must be a non-empty sequence of nn.Module classes, got {module_types}")
        if not 0 < tanh_saturation < 1:
            raise ValueError(f"`tanh_saturation` must be in (0, 1), got {tanh_saturation}")
        if not 0 < sigmoid_saturation < 0.5:
            raise ValueError(f"`sigmoid_saturation` must be in (0, 0.5), got {sigmoid_saturation}")
        self.every_n_steps = every_n_steps
        self.window = window
        self.module_types = module_types
        self.unit_dim = unit_dim
        self.tanh_saturation = tanh_saturation
        self.sigmoid_saturation = sigmoid_saturation

        self._handles: list[RemovableHandle] = []
        self._stats: dict[str, _LayerStats] = {}
        self._recording = False
        self._window_step = -1  # optimizer step where the open window started, -1 when none is open
        self._last_window_step = -1
        self._batches_in_window = 0

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._window_step < 0 and step % self.every_n_steps == 0 and step != self._last_window_step:
            self._open_window(pl_module, step)
        self._recording = self._window_step >= 0

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._recording:
            return
        self._recording = False
        self._batches_in_window += 1
        if self._batches_in_window >= self.window:
            log_metrics(trainer, self._compute(), self._window_step)
            self._close_window()

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A window cut short by the end of training is dropped rather than logged with fewer batches.
        self._close_window()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._close_window()

    def _open_window(self, pl_module: L.LightningModule, step: int) -> None:
        self._stats = {}
        for name, module in pl_module.named_modules():
            if not isinstance(module, self.module_types):
                continue
            self._stats[name] = _LayerStats(kind=self._kind(module))
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        self._window_step = self._last_window_step = step
        self._batches_in_window = 0

    def _close_window(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._recording = False
        self._window_step = -1

    def _kind(self, module: nn.Module) -> str:
        if isinstance(module, nn.Tanh):
            return "tanh"
        if isinstance(module, nn.Sigmoid):
            return "sigmoid"
        return "rectifier" if isinstance(module, RECTIFIERS) else "other"

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._recording and isinstance(output, Tensor) and output.is_floating_point():
                self._update(self._stats[name], output.detach())

        return hook

    def _update(self, stats: _LayerStats, y: Tensor) -> None:
        # Chan et al.'s pairwise update: stable in float32, where sum(y^2) - n * mean^2 would cancel.
        batch_var, batch_mean = torch.var_mean(y.float(), correction=0)
        n, nb = stats.count, y.numel()
        delta = batch_mean - stats.mean
        stats.mean = stats.mean + delta * (nb / (n + nb))
        stats.m2 = stats.m2 + batch_var * nb + delta.square() * (n * nb / (n + nb))
        stats.count = n + nb
        if stats.kind == "tanh":
            stats.saturated = stats.saturated + (y.abs() > self.tanh_saturation).sum()
        elif stats.kind == "sigmoid":
            eps = self.sigmoid_saturation
            stats.saturated = stats.saturated + ((y < eps) | (y > 1 - eps)).sum()
        elif stats.kind == "rectifier" and -y.ndim <= self.unit_dim < y.ndim and y.ndim >= 2:
            units = y.shape[self.unit_dim]
            active = (y > 0).movedim(self.unit_dim, 0).reshape(units, -1).any(dim=1)  # (units,)
            previous = stats.ever_active.get(units)
            stats.ever_active[units] = active if previous is None else previous | active

    def _compute(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, stats in self._stats.items():
            if stats.count == 0:
                continue
            metrics[f"act/mean/{name}"] = float(stats.mean)
            metrics[f"act/std/{name}"] = math.sqrt(float(stats.m2) / stats.count)
            if stats.kind in ("tanh", "sigmoid"):
                metrics[f"act/saturation_frac/{name}"] = float(stats.saturated) / stats.count
            elif stats.ever_active:
                units = sum(mask.numel() for mask in stats.ever_active.values())
                dead = sum(int((~mask).sum()) for mask in stats.ever_active.values())
                metrics[f"act/dead_frac/{name}"] = dead / units
        return metrics
