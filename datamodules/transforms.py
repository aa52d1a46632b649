"""Augmentation presets by name, built from ``torchvision.transforms.v2`` for uint8 image tensors ``(C, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torchvision.transforms import v2

AugmentName = Literal[
    "none", "standard", "autoaugment", "randaugment", "trivialaugment", "resized_crop", "color", "erasing"
]
AUGMENTATIONS: tuple[str, ...] = (
    "none",
    "standard",
    "autoaugment",
    "randaugment",
    "trivialaugment",
    "resized_crop",
    "color",
    "erasing",
)
#: Brightness, contrast and saturation strength of ``color`` (timm's default ``color_jitter``).
COLOR_JITTER = 0.4
#: Probability of ``erasing`` (timm's usual ``reprob``).
ERASE_PROB = 0.25
#: Area range of ``resized_crop`` (torchvision's ImageNet recipe): meant for images of a few dozen pixels or more.
RESIZED_CROP_SCALE = (0.08, 1.0)
_POLICIES = {
    "autoaugment": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
}


def build_augmentation(
    name: AugmentName,
    img_size: tuple[int, int],
    hflip: bool = True,
    *,
    crop: Literal["pad", "resized"] | None = None,
    color_jitter: float | None = None,
    erase_prob: float | None = None,
    mean: Sequence[float] | None = None,
) -> v2.Transform | None:
    """Per-sample training augmentation on uint8 tensors (uint8 out, same shape), or ``None`` when it does nothing.

    Presets:

    - ``standard``: a random crop with 1/8 reflect padding plus a horizontal flip (the flip only when ``hflip``: it
      would turn digits into other shapes);
    - ``autoaugment``, ``randaugment``, ``trivialaugment``: ``standard`` plus AutoAugment (CIFAR-10 policy),
      RandAugment or TrivialAugmentWide;
    - ``resized_crop``: a random crop of 8-100 % of the area and 3/4-4/3 aspect ratio, resized to ``img_size``
      (``RandomResizedCrop``, the ImageNet recipe's crop), plus the flip;
    - ``color``: ``standard`` plus ``ColorJitter`` of brightness, contrast and saturation by up to +-40 %;
    - ``erasing``: ``standard`` plus ``RandomErasing`` of one rectangle (2-33 % of the area) with probability 0.25.

    The keyword options override a preset's, so they compose with every preset, e.g. ``build_augmentation(
    "randaugment", size, crop="resized", erase_prob=0.25)``. The ops run in the order crop, flip, colour jitter,
    policy, erasing.

    Erasing happens here, on uint8 pixels, before the datamodules convert and normalize. v2's ``RandomErasing``
    writes its ``value`` as given, so a float fill (or ``"random"``'s normal noise) would be truncated into uint8;
    the fill is therefore the uint8 colour of ``mean`` (mid-grey 128 without it), which normalizes to 0, the fill of
    erasing after ``Normalize`` as torchvision's reference recipe does.

    Args:
        name: the preset.
        img_size: ``(height, width)`` of the images (the crops keep it).
        hflip: add a random horizontal flip to the crop.
        crop: ``"pad"`` (``standard``'s crop) or ``"resized"`` (``resized_crop``'s); ``None``: the preset's.
        color_jitter: brightness/contrast/saturation strength in [0, 1) (0: none); ``None``: the preset's.
        erase_prob: probability of erasing in [0, 1] (0: none); ``None``: the preset's.
        mean: per-channel mean in [0, 1] units, the colour erased rectangles are filled with.

    Example:
        >>> image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
        >>> erase = build_augmentation("none", (32, 32), erase_prob=1.0, mean=(0.5, 0.5, 0.5))
        >>> sorted(torch.unique(erase(image)).tolist())
        [128, 255]
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}.")
    if crop not in (None, "pad", "resized"):
        raise ValueError(f"crop must be 'pad' or 'resized', got {crop!r}")
    if crop is None:
        crop = None if name == "none" else "resized" if name == "resized_crop" else "pad"
    color_jitter = (COLOR_JITTER if name == "color" else 0.0) if color_jitter is None else color_jitter
    erase_prob = (ERASE_PROB if name == "erasing" else 0.0) if erase_prob is None else erase_prob
    if not 0 <= color_jitter < 1:
        raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter}")
    if not 0 <= erase_prob <= 1:
        raise ValueError(f"erase_prob must be in [0, 1], got {erase_prob}")
    ops: list[v2.Transform] = []
    if crop == "pad":
        padding = max(1, min(img_size) // 8)
        ops.append(v2.RandomCrop(img_size, padding=padding, padding_mode="reflect"))
    elif crop == "resized":
        ops.append(v2.RandomResizedCrop(img_size, scale=RESIZED_CROP_SCALE, antialias=True))
    if crop is not None and hflip:
        ops.append(v2.RandomHorizontalFlip())
    if color_jitter:
        ops.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if name in _POLICIES:
        ops.append(_POLICIES[name]())
    if erase_prob:
        fill = [float(round(255 * value)) for value in (mean if mean is not None else (0.5,))]
        ops.append(v2.RandomErasing(p=erase_prob, value=fill))
    return v2.Compose(ops) if ops else None


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 normalized with per-channel ``mean``/``std`` given in [0, 1] units."""
    # (C,) -> (1, C, 1, 1) so the statistics broadcast over batch and pixels.
    return (images.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


#: Horizontal flips of :class:`BatchFlipTranslate`: none, an independent coin per image and draw, or alternating.
BatchFlip = Literal["none", "random", "alternating"]


class BatchFlipTranslate:
    """Flips and translations applied to a whole batch of images at once (a few tensor ops per batch, not per image),
    as the GPU speedruns augment in-memory tensors.

    - ``flip="random"`` mirrors each image with probability 1/2. ``"alternating"`` (Jordan 2024) mirrors an image on
      its first draw by a coin, and on each later draw the opposite way of the draw before: over two epochs every
      image is seen both ways, which random flips leave to chance. The state is per sample index, so it needs the
      indices of the batch (and is exact in one process: ``num_workers=0``).
    - ``translate=t`` moves each image by a random whole number of pixels in ``[-t, t]`` along each axis, the border
      filled by reflection (a random crop of the image padded by ``t`` with ``mode="reflect"``).

    Args:
        num_samples: size of the dataset the indices point into (for ``"alternating"``).
        flip: ``"none"``, ``"random"`` or ``"alternating"``.
        translate: the largest shift in pixels (0: none).
        seed: seed of the first draw's coins of ``"alternating"``.

    >>> augment = BatchFlipTranslate(4, flip="alternating")
    >>> images = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).repeat(4, 1, 1, 1)
    >>> first, second = augment(images, torch.arange(4)), augment(images, torch.arange(4))
    >>> bool(((first[:, 0, 0, 0] == 0) != (second[:, 0, 0, 0] == 0)).all())  # each image mirrored once in two
    True
    """

    def __init__(self, num_samples: int, flip: BatchFlip = "none", translate: int = 0, seed: int = 0) -> None:
        if flip not in ("none", "random", "alternating"):
            raise ValueError(f"Unknown batch flip {flip!r}; choose from none, random, alternating")
        if isinstance(translate, bool) or not isinstance(translate, int) or translate < 0:
            raise ValueError(f"translate must be a whole number of pixels >= 0, got {translate!r}")
        self.flip, self.translate = flip, translate
        generator = torch.Generator().manual_seed(seed)
        self.flipped_next = torch.rand(num_samples, generator=generator) < 0.5 if flip == "alternating" else None

    def __call__(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, C, H, W)`` of samples ``indices`` ``(B,)``, flipped and translated (same dtype, shape)."""
        batch, _, height, width = images.shape
        if self.flip != "none":
            if self.flipped_next is None:
                mirror = torch.rand(batch) < 0.5
            else:
                mirror = self.flipped_next[indices]
                self.flipped_next[indices] = ~mirror
            images = torch.where(mirror.view(-1, 1, 1, 1), images.flip(-1), images)
        if self.translate:
            shifts = torch.randint(-self.translate, self.translate + 1, (2, batch, 1))
            rows = _reflect(torch.arange(height) + shifts[0], height)  # (B, H): the source row of each row
            cols = _reflect(torch.arange(width) + shifts[1], width)  # (B, W)
            batch_index = torch.arange(batch).view(-1, 1, 1)
            # advanced indices around the channel slice put their (B, H, W) first: (B, H, W, C)
            images = images[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        return images.contiguous()


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices outside ``[0, size)`` mirrored back as ``F.pad(mode="reflect")`` does (edge not repeated)."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)
