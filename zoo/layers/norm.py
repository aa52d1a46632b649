"""Normalization layers resolved by name, so blocks can take ``norm_layer="batchnorm"``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NormName = str  # "batchnorm" | "layernorm" | "groupnorm" | "none"


def get_norm_layer(name: NormName | None, kind: str = "1d") -> Callable[[int], nn.Module]:
    """Return a constructor ``f(num_features) -> nn.Module`` for a normalization name.

    Args:
        name: ``"batchnorm"``, ``"layernorm"``, ``"groupnorm"`` (32 groups or fewer) or ``"none"``/``None``.
        kind: ``"1d"`` for features ``(B, C)``, ``"2d"`` for feature maps ``(B, C, H, W)``.
    """
    key = (name or "none").lower()
    if key == "none":
        return lambda num_features: nn.Identity()
    if key == "batchnorm":
        return {"1d": nn.BatchNorm1d, "2d": nn.BatchNorm2d, "3d": nn.BatchNorm3d}[kind]
    if key == "layernorm":
        if kind == "1d":
            return nn.LayerNorm
        # LayerNorm over (C, H, W) needs the spatial size; GroupNorm(1, C) normalizes the same axes.
        return lambda num_features: nn.GroupNorm(1, num_features)
    if key == "groupnorm":
        return lambda num_features: nn.GroupNorm(_num_groups(num_features), num_features)
    raise ValueError(f"Unknown norm layer {name!r}; choose from 'batchnorm', 'layernorm', 'groupnorm', 'none'.")


def _num_groups(num_features: int, max_groups: int = 32) -> int:
    return next(g for g in range(min(max_groups, num_features), 0, -1) if num_features % g == 0)
