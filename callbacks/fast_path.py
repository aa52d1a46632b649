"""One switch for the fast path of any task: channels-last weights and ``torch.compile``, with bf16 checked.

Recipes turn it on together with bf16 autocast through ``-c recipes/fast.yaml``; in Python, give
``FastPath()`` to a Trainer with ``precision="bf16-mixed"``.
"""

from __future__ import annotations

import platform
import shutil
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

#: CPU feature flags (``/proc/cpuinfo``) that give native bf16 arithmetic: AMX and AVX-512 BF16 on x86, the BF16
#: extension on Arm.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes in bf16 natively; ``None`` when it cannot be told (no ``/proc/cpuinfo``).

    Without native bf16, autocast converts every operand and computes in fp32: slower than fp32 itself.
    """
    try:
        with open(cpuinfo) as file:
            text = file.read()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 and Arm spell the line differently
            flags.update(value.split())
    return bool(flags.intersection(BF16_FLAGS))


def warn_if_slow_bf16(trainer: L.Trainer) -> bool:
    """Warn when ``trainer`` runs bf16 on a CPU without native bf16; returns whether it warned."""
    precision = str(trainer.precision)
    if not precision.startswith("bf16") or trainer.strategy.root_device.type != "cpu":
        return False
    if cpu_has_native_bf16() is not False:
        return False
    rank_zero_warn(
        f"precision={precision!r} on a CPU without native bf16 ({platform.processor() or platform.machine()} lacks "
        f"{', '.join(BF16_FLAGS)}): every bf16 operation is emulated, which is usually slower than fp32. "
        "Use --trainer.precision 32-true (channels_last and compile still help)."
    )
    return True


def _cxx_compiler() -> str | None:
    return next((name for name in ("g++", "c++", "clang++") if shutil.which(name)), None)


class FastPath(Callback):
    """Channels-last weights and ``torch.compile`` for the model a Trainer runs, and a check that bf16 is native.

    Args:
        channels_last: store 4-D weights (convolutions) channels-last: oneDNN's and cuDNN's fast layout. A
            convolution with channels-last weights gives channels-last outputs whatever its input's layout, so the
            inputs need no change. Models without 4-D weights are left alone.
        compile: compile the model's ``forward`` (``nn.Module.compile``: the module and its state-dict keys stay as
            they are, so checkpoints and weight averaging see the plain model). The first steps of each mode
            (train, eval) take longer while the graph compiles.
        compile_mode: ``torch.compile``'s ``mode`` (``None``: the default; ``"max-autotune"`` searches longer).
        dynamic: ``torch.compile``'s ``dynamic`` (``None``: recompile once with dynamic shapes when a shape changes,
            e.g. the last, smaller batch).

    Example:
        >>> trainer = L.Trainer(precision="bf16-mixed", callbacks=[FastPath()], logger=False)  # doctest: +SKIP
    """

    def __init__(
        self,
        channels_last: bool = True,
        compile: bool = True,
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] | None = None,
        dynamic: bool | None = None,
    ) -> None:
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.dynamic = dynamic
        self._compiled: set[int] = set()

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        warn_if_slow_bf16(trainer)
        # Before the optimizer exists and the model moves to its device: both keep the layout.
        if self.channels_last and any(p.dim() == 4 for p in pl_module.parameters()):
            pl_module.to(memory_format=torch.channels_last)
        if self.compile and trainer.strategy.root_device.type == "cpu" and _cxx_compiler() is None:
            raise RuntimeError(
                "FastPath(compile=True) on the CPU needs a C++ compiler on PATH (g++ or clang++), which "
                "torch.compile's CPU backend builds its kernels with. Install one, or pass compile=False."
            )

    def _compile(self, pl_module: L.LightningModule) -> None:
        # Compiled when the loop starts rather than in setup, so that callbacks copying the model in their setup
        # (weight averaging) copy the plain module, not one whose compiled call is bound to this instance.
        if not self.compile or id(pl_module) in self._compiled:
            return
        pl_module.compile(mode=self.compile_mode, dynamic=self.dynamic)
        self._compiled.add(id(pl_module))
        rank_zero_info(f"FastPath: compiled {type(pl_module).__name__}.forward (mode={self.compile_mode or 'default'})")

    @override
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compile(pl_module)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compile(pl_module)

    @override
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compile(pl_module)

    @override
    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compile(pl_module)
