"""A profiler that records nothing at the least cost per hook: the recipes' default in place of Lightning's."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from lightning.pytorch.profilers import Profiler
from typing_extensions import override

_NOTHING = nullcontext()


class NullProfiler(Profiler):
    """Lightning's ``PassThroughProfiler`` without its per-call generator.

    The Trainer wraps every hook call (each callback's, the module's, the strategy's) in ``profiler.profile(...)``;
    the default profiler builds a generator-based context manager each time, about 1 µs, some 90 times per step with
    the recipes' callbacks. This one hands back one shared no-op context manager. Ask for real profiling as usual
    (``--trainer.profiler simple``).

    Example:
        >>> with NullProfiler().profile("[Callback]EarlyStopping.on_train_batch_end"):
        ...     pass
    """

    @override
    def start(self, action_name: str) -> None:
        pass

    @override
    def stop(self, action_name: str) -> None:
        pass

    @override
    def profile(self, action_name: str) -> AbstractContextManager:
        return _NOTHING
