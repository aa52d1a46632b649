"""Augmentation presets by name, built from ``torchvision.transforms.v2`` for uint8 image tensors ``(C, H, W)``."""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

AugmentName = Literal["none", "standard", "autoaugment", "randaugment", "trivialaugment"]
AUGMENTATIONS: tuple[str, ...] = ("none", "standard", "autoaugment", "randaugment", "trivialaugment")


def build_augmentation(name: AugmentName, img_size: tuple[int, int], hflip: bool = True) -> v2.Transform | None:
    """Per-sample training augmentation on uint8 tensors, or ``None`` for ``"none"``.

    ``standard`` is a random crop with 1/8 reflect padding plus a horizontal flip (the flip only when ``hflip``:
    it would turn digits into other shapes); the policy presets add AutoAugment (CIFAR-10 policy), RandAugment or
    TrivialAugmentWide on top of it.
    """
    if name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}.")
    padding = max(1, min(img_size) // 8)
    ops: list[v2.Transform] = [v2.RandomCrop(img_size, padding=padding, padding_mode="reflect")]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if name == "autoaugment":
        ops.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    elif name == "randaugment":
        ops.append(v2.RandAugment())
    elif name == "trivialaugment":
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops)


def normalize_batch(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 normalized with per-channel ``mean``/``std`` given in [0, 1] units."""
    # (C,) -> (1, C, 1, 1) so the statistics broadcast over batch and pixels.
    return (images.float().div_(255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
