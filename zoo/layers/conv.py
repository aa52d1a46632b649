"""Convolution building blocks shared by the CNN families."""

from __future__ import annotations

from torch import nn

from zoo.layers.activations import get_act_layer
from zoo.layers.norm import get_norm_layer


class ConvNormAct(nn.Sequential):
    """``Conv2d -> norm -> activation`` with 'same' padding; the conv has no bias when a norm follows it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm: str | None = "batchnorm",
        act: str = "relu",
    ) -> None:
        has_norm = (norm or "none") != "none"
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=not has_norm,
            ),
            get_norm_layer(norm, "2d")(out_channels),
            get_act_layer(act)(),
        )
