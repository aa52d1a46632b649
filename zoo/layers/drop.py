"""Stochastic depth (Huang et al., 2016, "Deep Networks with Stochastic Depth"), per sample as in timm's DropPath.

During training each sample's residual branch is zeroed with probability ``drop_prob`` and the kept ones are scaled
by ``1 / (1 - drop_prob)``, so the expected output is unchanged; in eval mode it is the identity.
"""

from __future__ import annotations

import torch
from torch import nn


def drop_path(
    x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> torch.Tensor:
    """Zero whole samples of a residual branch ``x`` (any shape ``(B, ...)``) with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)  # (B, 1, ..., 1): one draw per sample
    if scale_by_keep and keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; the identity in eval mode.

    >>> import torch
    >>> layer = DropPath(0.5).eval()
    >>> x = torch.randn(4, 8)
    >>> torch.equal(layer(x), x)
    True
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
