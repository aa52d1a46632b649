"""Attention maps of a few fixed validation inputs, logged as images."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from callbacks._utils import log_image


class AttentionMapLogger(Callback):
    """Log the attention weights a model gives a few validation inputs, one image per input.

    The model offers ``attention_maps(x)`` (or ``attention_maps(x, lengths)`` for batches with lengths), returning
    ``{layer name: weights (B, H, T_query, T_key)}``; the callback knows nothing else of it. The first ``num_samples``
    inputs of the first validation batch are kept, and every ``every_n_epochs`` epochs each becomes one image under
    ``<tag_prefix>/sample_<i>``: a grid with a row per layer and a column per head (at most ``max_heads``), each map
    scaled to its own maximum, queries down and keys across. The last maps are kept in ``.last_maps``.

    Args:
        num_samples: validation inputs shown.
        max_heads: heads shown per layer.
        every_n_epochs: log on every this many epochs.
        tag_prefix: prefix of the image names.

    Example:
        >>> AttentionMapLogger(num_samples=2)  # doctest: +ELLIPSIS
        <...AttentionMapLogger object at ...>
    """

    def __init__(
        self, num_samples: int = 4, max_heads: int = 8, every_n_epochs: int = 1, tag_prefix: str = "attention"
    ) -> None:
        if num_samples < 1 or max_heads < 1 or every_n_epochs < 1:
            raise ValueError("`num_samples`, `max_heads` and `every_n_epochs` must be >= 1")
        self.num_samples, self.max_heads, self.every_n_epochs = num_samples, max_heads, every_n_epochs
        self.tag_prefix = tag_prefix
        self.inputs: tuple[Tensor, ...] | None = None
        self.last_maps: dict[str, Tensor] = {}

    def unpack_batch(self, batch: Any) -> tuple[Tensor, ...]:
        """The model inputs of a validation batch: ``(x,)``, or ``(x, lengths)`` for ``(x, target, lengths)``."""
        if isinstance(batch, Tensor):
            return (batch,)
        if isinstance(batch, (tuple, list)) and len(batch) == 3:
            return batch[0], batch[2]
        return (batch[0],)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "attention_maps", None)):
            raise TypeError(
                f"AttentionMapLogger needs a model with attention_maps(x) -> {{name: (B, H, T, S) weights}}; "
                f"{type(pl_module).__name__} has none"
            )

    @override
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.inputs is None and batch_idx == 0 and dataloader_idx == 0:
            self.inputs = tuple(part[: self.num_samples].detach().cpu().clone() for part in self.unpack_batch(batch))

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.inputs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                maps = pl_module.attention_maps(*(part.to(pl_module.device) for part in self.inputs))
        finally:
            pl_module.train(was_training)
        self.last_maps = {name: weights.detach().float().cpu() for name, weights in maps.items()}
        if trainer.is_global_zero and self.last_maps:
            for index in range(len(self.inputs[0])):
                image = self.grid({name: weights[index] for name, weights in self.last_maps.items()})
                log_image(trainer, f"{self.tag_prefix}/sample_{index}", image, trainer.global_step)

    def grid(self, maps: dict[str, Tensor]) -> Tensor:
        """One gray ``(1, H, W)`` image of ``{layer: (heads, T, S)}`` maps: a row per layer, a column per head."""
        heads = min(self.max_heads, max(weights.shape[0] for weights in maps.values()))
        rows = len(maps)
        height = max(weights.shape[1] for weights in maps.values())
        width = max(weights.shape[2] for weights in maps.values())
        pad = 1
        image = torch.ones(rows * (height + pad) + pad, heads * (width + pad) + pad)
        for row, weights in enumerate(maps.values()):
            for head in range(min(heads, weights.shape[0])):
                cell = weights[head]
                cell = cell / cell.amax().clamp_min(1e-12)
                top, left = pad + row * (height + pad), pad + head * (width + pad)
                image[top : top + cell.shape[0], left : left + cell.shape[1]] = cell
        return image[None]
