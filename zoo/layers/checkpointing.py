"""Activation (gradient) checkpointing of one module: its activations are dropped after the forward and recomputed in
the backward, trading compute for memory (Chen et al., 2016, "Training Deep Nets with Sublinear Memory Cost").

``torch.utils.checkpoint`` recomputes by running the module's forward a second time, so a BatchNorm in training mode
would update its running statistics twice per step. :func:`checkpoint_module` restores them after the recomputation,
so a checkpointed model keeps the same statistics as one without checkpointing. Under ``torch.compile`` that is
not needed (the compiled graph recomputes without the in-place updates) and a custom ``context_fn`` is not supported,
so the plain call is used there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def use_checkpointing(module: nn.Module, enabled: bool) -> bool:
    """Whether to checkpoint now: ``enabled``, training with gradients, and not under ``torch.export``."""
    return enabled and module.training and torch.is_grad_enabled() and not torch.compiler.is_exporting()


@contextlib.contextmanager
def _keep_norm_statistics(module: nn.Module) -> Iterator[None]:
    buffers = [
        buffer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        for buffer in layer.buffers()
    ]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved, strict=True):
                buffer.copy_(value)


def checkpoint_module(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` with non-reentrant checkpointing; BatchNorm statistics are updated once, as without it.

    >>> block = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    >>> out = checkpoint_module(block, torch.randn(3, 4, requires_grad=True))
    >>> out.sum().backward()
    >>> int(block[1].num_batches_tracked)
    1
    """
    if torch.compiler.is_compiling():
        return checkpoint(module, *args, use_reentrant=False)
    return checkpoint(
        module,
        *args,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _keep_norm_statistics(module)),
    )
