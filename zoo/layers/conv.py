"""Convolution building blocks shared by the CNN families."""

from __future__ import annotations

from typing import Literal

from torch import nn

from zoo.layers.activations import inplace_activation
from zoo.layers.norm import get_norm_layer

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class ConvNormAct(nn.Sequential):
    """``conv -> norm -> activation`` with 'same' padding (odd kernels); the conv has no bias when a norm follows it.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (odd).
        stride: stride; the spatial size is divided by it, rounding up.
        groups: conv groups (``groups=in_channels`` for a depthwise conv).
        dilation: conv dilation.
        norm: ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"`` (over channels) or ``"none"``.
        act: activation name.
        dims: spatial dimensions (1: sequences, 2: images, 3: volumes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        norm: str | None = "batchnorm",
        act: str = "relu",
        dims: Literal[1, 2, 3] = 2,
    ) -> None:
        if dims not in _CONVS:
            raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        has_norm = (norm or "none").lower() != "none"
        padding = dilation * (kernel_size // 2)
        super().__init__(
            _CONVS[dims](in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=not has_norm),
            get_norm_layer(norm, dims)(out_channels),
            inplace_activation(act),  # its input is the norm's (or conv's) fresh output
        )
