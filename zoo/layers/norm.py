"""Normalization layers resolved by name, so blocks can take ``norm_layer="batchnorm"``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NormName = str  # "batchnorm" | "layernorm" | "groupnorm" | "none"


def get_norm_layer(name: NormName | None, dims: int = 0) -> Callable[[int], nn.Module]:
    """Return a constructor ``f(num_features) -> nn.Module`` for a normalization name.

    Args:
        name: ``"batchnorm"``, ``"layernorm"``, ``"groupnorm"`` (32 groups or fewer) or ``"none"``/``None``.
        dims: spatial dimensions of the input ``(B, C, *spatial)``: 0 for features ``(B, C)``, 1 for sequences,
            2 for images, 3 for volumes.
    """
    key = (name or "none").lower()
    if key == "none":
        return lambda num_features: nn.Identity()
    if key == "batchnorm":
        return {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    if key == "layernorm":
        if dims == 0:
            return nn.LayerNorm
        return ChannelLayerNorm
    if key == "groupnorm":
        return lambda num_features: nn.GroupNorm(_num_groups(num_features), num_features)
    raise ValueError(f"Unknown norm layer {name!r}; choose from 'batchnorm', 'layernorm', 'groupnorm', 'none'.")


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of ``(B, C, *spatial)``, at each position on its own.

    Unlike ``GroupNorm(1, C)``, which pools statistics over every position, no step sees another's values, so a
    causal sequence model stays causal.

    >>> x = torch.randn(2, 4, 5)
    >>> torch.allclose(ChannelLayerNorm(4)(x), nn.LayerNorm(4)(x.transpose(1, 2)).transpose(1, 2), atol=1e-6)
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)  # (B, C, *S) -> (B, *S, C) -> back


def _num_groups(num_features: int, max_groups: int = 32) -> int:
    return next(g for g in range(min(max_groups, num_features), 0, -1) if num_features % g == 0)
