"""Feature maps of Conv2d layers for one fixed validation image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from callbacks._utils import log_image, unpack_xy


class FeatureMapLogger(Callback):
    """Log the output channels of Conv2d layers for the first image of the first validation batch.

    Every ``every_n_epochs`` epochs, forward hooks are put on the chosen layers for one extra forward of that image
    and removed right after (and on teardown, should that forward fail). Each layer becomes one image: its first
    ``max_channels`` channels side by side, each min-max scaled, under the tag ``features/<layer>``, sent through
    :func:`log_image`. The last maps are kept in ``.last_feature_maps`` (``{layer: (C, H, W)}``).

    Args:
        layer_names: Names of Conv2d modules (as in ``named_modules()``); default: the first ``max_layers`` of them.
        max_layers: How many Conv2d layers to show when ``layer_names`` is not given.
        max_channels: Channels shown per layer.
        every_n_epochs: Log on every this many epochs.
        tag_prefix: Prefix of the image names.

    Example:
        >>> FeatureMapLogger(layer_names=["stem.conv"], max_channels=8)  # doctest: +ELLIPSIS
        <...FeatureMapLogger object at ...>
    """

    def __init__(
        self,
        layer_names: Sequence[str] | None = None,
        max_layers: int = 4,
        max_channels: int = 16,
        every_n_epochs: int = 1,
        tag_prefix: str = "features",
    ) -> None:
        if isinstance(layer_names, str):
            raise ValueError("`layer_names` must be a sequence of names, not one string")
        if layer_names is not None and not layer_names:
            raise ValueError("`layer_names` must not be empty (use None for the first `max_layers` Conv2d layers)")
        if max_layers < 1 or max_channels < 1 or every_n_epochs < 1:
            raise ValueError("`max_layers`, `max_channels` and `every_n_epochs` must be >= 1")
        self.layer_names = list(layer_names) if layer_names is not None else None
        self.max_layers = max_layers
        self.max_channels = max_channels
        self.every_n_epochs = every_n_epochs
        self.tag_prefix = tag_prefix
        self.sample: Tensor | None = None
        self.last_feature_maps: dict[str, Tensor] = {}
        self._layers: dict[str, nn.Conv2d] = {}
        self._handles: list[RemovableHandle] = []

    def unpack_batch(self, batch: Any) -> Tensor:
        """The inputs of a validation batch; override for other batch layouts."""
        return unpack_xy(batch)[0]

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        convs = {name: m for name, m in pl_module.named_modules() if isinstance(m, nn.Conv2d)}
        if self.layer_names is None:
            self._layers = dict(list(convs.items())[: self.max_layers])
            return
        missing = [name for name in self.layer_names if name not in convs]
        if missing:
            raise ValueError(f"FeatureMapLogger: no Conv2d named {missing}; Conv2d layers are {list(convs)}")
        self._layers = {name: convs[name] for name in self.layer_names}

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
        if self.sample is None and batch_idx == 0 and dataloader_idx == 0:
            self.sample = self.unpack_batch(batch)[:1].detach().cpu().clone()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.sample is None or not self._layers:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        maps: dict[str, Tensor] = {}
        for name, layer in self._layers.items():
            self._handles.append(layer.register_forward_hook(_capture(maps, name)))
        try:
            with torch.no_grad():
                pl_module(self.sample.to(pl_module.device))
        finally:
            self._remove_hooks()
        self.last_feature_maps = maps
        if trainer.is_global_zero:
            for name, fmap in maps.items():
                log_image(trainer, f"{self.tag_prefix}/{name}", self._grid(fmap), trainer.global_step)

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _grid(self, fmap: Tensor) -> Tensor:
        maps = fmap[: self.max_channels].float()  # (K, H, W)
        k, h, w = maps.shape
        lo = maps.amin(dim=(1, 2), keepdim=True)
        hi = maps.amax(dim=(1, 2), keepdim=True)
        maps = (maps - lo) / (hi - lo).clamp_min(1e-12)
        cols = math.ceil(math.sqrt(k))
        rows = math.ceil(k / cols)
        pad = 1
        grid = torch.ones(rows * (h + pad) + pad, cols * (w + pad) + pad)
        for i in range(k):
            r, c = divmod(i, cols)
            top, left = pad + r * (h + pad), pad + c * (w + pad)
            grid[top : top + h, left : left + w] = maps[i]
        return grid[None]  # (1, H', W'): one gray channel


def _capture(store: dict[str, Tensor], name: str) -> Any:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        store[name] = output[0].detach().cpu().clone()  # first (only) sample: (C, H, W)

    return hook
