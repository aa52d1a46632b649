"""Noisy, denoised, clean and error panels of the same validation images, epoch after epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from callbacks._utils import image_grid, log_image


class DenoisingPanelLogger(Callback):
    """Log four rows of the same ``num_samples`` validation images every ``every_n_epochs`` epochs: the noisy input,
    the model's estimate, the clean image and the absolute error ``|estimate - clean|``, magnified by
    ``error_gain`` (an error of ``1 / error_gain`` shows white), all in pixel units.

    Duck-typed, for any denoiser with ``noisy_clean_pair(batch, generator, blind)`` (the
    :class:`~zoo.tasks.Denoiser` task): the images are noised once, from a generator seeded with ``seed`` at the
    full noise level, so every epoch's panel shows the same noisy inputs and the change is the model's alone.

    Image tag ``{tag}/denoising`` through :func:`log_image` (TensorBoard, W&B, MLflow; nothing is logged without
    such a logger). The last panel is kept in ``.last_panel`` (``(3, H, W)`` in [0, 1]).

    Args:
        num_samples: Images per row.
        every_n_epochs: Log on every this many epochs.
        error_gain: Factor the error row is multiplied by before clipping to [0, 1].
        seed: Seed of the panel's noise.
        tag: Prefix of the image name.

    Example:
        >>> DenoisingPanelLogger(num_samples=4, error_gain=4.0)  # doctest: +ELLIPSIS
        <...DenoisingPanelLogger object at ...>
    """

    def __init__(
        self, num_samples: int = 8, every_n_epochs: int = 1, error_gain: float = 4.0, seed: int = 0, tag: str = "val"
    ) -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"`num_samples` and `every_n_epochs` must be >= 1, got {num_samples}, {every_n_epochs}")
        if not error_gain > 0:
            raise ValueError(f"`error_gain` must be positive, got {error_gain}")
        if not tag:
            raise ValueError("`tag` must be a non-empty image name prefix")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.error_gain = error_gain
        self.seed = seed
        self.tag = tag
        self.noisy: Tensor | None = None
        self.clean: Tensor | None = None
        self.last_panel: Tensor | None = None

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
        if self.noisy is not None or batch_idx != 0 or dataloader_idx != 0:
            return
        if not callable(getattr(pl_module, "noisy_clean_pair", None)):
            raise TypeError(f"{type(self).__name__} needs a denoiser with noisy_clean_pair(); got {type(pl_module)}")
        n = self.num_samples
        first = [part[:n] for part in batch] if isinstance(batch, (tuple, list)) else batch[:n]
        noisy, clean = pl_module.noisy_clean_pair(first, torch.Generator().manual_seed(self.seed), blind=False)
        self.noisy, self.clean = noisy.detach().cpu(), clean.detach().cpu()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.noisy is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with torch.no_grad():
            estimate = pl_module(self.noisy.to(pl_module.device)).float().cpu().clamp(0, 1)
        error = ((estimate - self.clean).abs() * self.error_gain).clamp(0, 1)
        rows = torch.cat([self.noisy.clamp(0, 1), estimate, self.clean.clamp(0, 1), error])
        self.last_panel = image_grid(rows, len(self.noisy))
        if trainer.is_global_zero:
            log_image(trainer, f"{self.tag}/denoising", self.last_panel, trainer.global_step)
