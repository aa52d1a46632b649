"""A grid of validation images over their reconstructions and, for generative models, images drawn from the prior."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from callbacks._utils import image_grid, log_image, unpack_xy


class ReconstructionGridLogger(Callback):
    """Log the same ``num_samples`` validation images (top row) over their reconstructions (bottom row) every
    ``every_n_epochs`` epochs, and ``num_samples`` images the module draws from its prior when it has ``sample``.

    Duck-typed, for any image-to-image module: the reconstructions are ``pl_module.predict_batch(x)`` (images in
    [0, 1]); inputs are shown in pixel units through ``pl_module.to_pixels`` when the module has it (the data's
    normalization undone), min-max scaled otherwise. Samples are ``pl_module.sample(num_samples, generator)`` from a
    generator seeded with ``seed``, so every epoch decodes the same latents.

    Image tags ``{tag}/reconstructions`` and ``{tag}/samples`` through :func:`log_image` (TensorBoard, W&B, MLflow;
    nothing is logged without such a logger). The last grids are kept in ``.last_reconstructions`` and
    ``.last_samples`` (``(3, H, W)`` in [0, 1]).

    Args:
        num_samples: Images per row.
        every_n_epochs: Log on every this many epochs.
        seed: Seed of the prior samples' latents.
        tag: Prefix of the image names.

    Example:
        >>> ReconstructionGridLogger(num_samples=8)  # doctest: +ELLIPSIS
        <...ReconstructionGridLogger object at ...>
    """

    def __init__(self, num_samples: int = 16, every_n_epochs: int = 1, seed: int = 0, tag: str = "val") -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"`num_samples` and `every_n_epochs` must be >= 1, got {num_samples}, {every_n_epochs}")
        if not tag:
            raise ValueError("`tag` must be a non-empty image name prefix")
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.tag = tag
        self.inputs: Tensor | None = None
        self.last_reconstructions: Tensor | None = None
        self.last_samples: Tensor | None = None

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
            x, _ = unpack_xy(batch)
            self.inputs = x[: self.num_samples].detach().cpu().clone()

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.inputs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        with torch.no_grad():
            x = self.inputs.to(pl_module.device)
            reconstructions = pl_module.predict_batch(x).float().cpu()
            shown = pl_module.to_pixels(x).float().cpu() if hasattr(pl_module, "to_pixels") else _min_max(x.cpu())
            self.last_reconstructions = image_grid(torch.cat([shown, reconstructions]), len(x))
            sample = getattr(pl_module, "sample", None)
            if callable(sample):
                samples = sample(self.num_samples, generator=torch.Generator().manual_seed(self.seed))
                self.last_samples = image_grid(samples.float().cpu(), self.num_samples)
        if trainer.is_global_zero:
            log_image(trainer, f"{self.tag}/reconstructions", self.last_reconstructions, trainer.global_step)
            if self.last_samples is not None:
                log_image(trainer, f"{self.tag}/samples", self.last_samples, trainer.global_step)


def _min_max(x: Tensor) -> Tensor:
    """Each image scaled to [0, 1] on its own."""
    flat = x.float().flatten(1)
    low, high = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
    return (x - low) / (high - low).clamp_min(1e-12)
