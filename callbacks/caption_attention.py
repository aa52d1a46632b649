"""Where a captioner looks while it writes each word: the image, then one overlay of its attention per word."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from callbacks._utils import log_image, require_matplotlib


def draw_caption_attention(image: Tensor, words: Sequence[str], maps: Tensor, title: str | None = None) -> Any:
    """A matplotlib figure: ``image`` ``(C, H, W)`` in [0, 1], then for each of ``words`` the image under its
    attention map ``(rows, columns)`` (upsampled to the image, scaled to its own maximum), the word as the title."""
    import matplotlib.pyplot as plt

    panels = len(words) + 1
    figure, axes = plt.subplots(1, panels, figsize=(1.6 * panels, 1.9), squeeze=False)
    pixels = image.detach().float().cpu().clamp(0, 1)
    shown = (pixels[0] if pixels.shape[0] == 1 else pixels.permute(1, 2, 0)).numpy()
    cmap = "gray" if pixels.shape[0] == 1 else None
    axes[0, 0].imshow(shown, cmap=cmap, vmin=0, vmax=1)
    axes[0, 0].set_title(title or "input", fontsize=8)
    size = tuple(pixels.shape[1:])
    for index, word in enumerate(words):
        weights = maps[index].detach().float().cpu()[None, None]
        upsampled = F.interpolate(weights, size=size, mode="bilinear", align_corners=False)[0, 0]
        axis = axes[0, index + 1]
        axis.imshow(shown, cmap=cmap, vmin=0, vmax=1)
        heat = (upsampled / upsampled.max().clamp(min=1e-12)).numpy()
        axis.imshow(heat, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        axis.set_title(word, fontsize=9)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    return figure


class CaptionAttentionLogger(Callback):
    """Log, every ``every_n_epochs`` epochs, the greedy captions of ``num_samples`` fixed validation images with the
    attention of each word over the image (``{tag}/caption_attention/{i}``).

    Duck-typed, for any captioner with ``attention_maps(images) -> (ids (B, L), maps (B, L, rows, columns))`` and
    ``decode_ids(ids) -> str``. Batches are ``(images, captions, ...)``; the normalized images are shown min-max
    scaled. The last figures' words and maps are kept in ``.last_words`` and ``.last_maps``.

    Args:
        num_samples: images drawn (one figure each).
        every_n_epochs: log on every this many epochs.
        tag: prefix of the image names.

    Example:
        >>> CaptionAttentionLogger(num_samples=2)  # doctest: +ELLIPSIS
        <...CaptionAttentionLogger object at ...>
    """

    def __init__(self, num_samples: int = 4, every_n_epochs: int = 1, tag: str = "val") -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(f"`num_samples` and `every_n_epochs` must be >= 1, got {num_samples}, {every_n_epochs}")
        require_matplotlib(type(self).__name__)
        self.num_samples, self.every_n_epochs, self.tag = num_samples, every_n_epochs, tag
        self.images: Tensor | None = None
        self.last_words: list[list[str]] = []
        self.last_maps: list[Tensor] = []

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "attention_maps", None)) or not callable(
            getattr(pl_module, "decode_ids", None)
        ):
            raise ValueError(
                f"CaptionAttentionLogger needs a captioner with attention_maps(images) and decode_ids(ids); "
                f"{type(pl_module).__name__} has not"
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
        if self.images is None or len(self.images) < self.num_samples:
            images = batch[0].detach().cpu()
            held = images if self.images is None else torch.cat([self.images, images])
            self.images = held[: self.num_samples]

    @override
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.images is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        ids, maps = pl_module.attention_maps(self.images.to(pl_module.device))  # the same greedy captions on every rank
        if not trainer.is_global_zero:
            return
        images = self.images
        low, high = images.min(), images.max()
        shown = (images - low) / (high - low).clamp(min=1e-12)
        self.last_words, self.last_maps = [], []
        for index in range(len(images)):
            # the map of EOS, after the last word, shows where the model decided the caption was complete
            words = [*pl_module.decode_ids(ids[index]).split(), "<eos>"][: maps.shape[1]]
            self.last_words.append(words)
            self.last_maps.append(maps[index, : len(words)].cpu())
            figure = draw_caption_attention(shown[index], words, self.last_maps[-1])
            log_image(trainer, f"{self.tag}/caption_attention/{index}", figure, trainer.global_step)
