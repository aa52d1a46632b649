"""Convolution stacks of any dimensionality, dilated context stacks and transposed-conv upsampling.

- :class:`ConvStack`: ``[conv -> norm -> act] x n`` for 1-d, 2-d or 3-d inputs; :func:`conv_stages` stacks them
  into the stages of :class:`zoo.cnn.CNN` and :class:`zoo.volumetric.CNN3D`.
- :class:`Conv1dStack`: the 1-d case for sequences ``(B, C, T)`` (time-series models).
- :class:`DilatedConvStack`: 3x3 convs with growing dilation that keep the spatial size, the context module of
  Yu & Koltun (2016), optionally residual (denoising nets).
- :class:`UpsampleBlock`: transposed-conv upsampling with an optional U-Net style skip connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from zoo.layers.activations import get_act_layer
from zoo.layers.conv import ConvNormAct
from zoo.layers.norm import get_norm_layer


def _per_layer(value: int | Sequence[int], num_layers: int, name: str) -> tuple[int, ...]:
    values = (value,) * num_layers if isinstance(value, int) else tuple(value)
    if len(values) != num_layers:
        raise ValueError(f"{name} has {len(values)} entries for {num_layers} layers")
    return values


class ConvStack(nn.Sequential):
    """``[conv -> norm -> act] x len(channels)`` with 'same' padding (odd kernels); the conv has no bias before a norm.

    Each layer divides the spatial size by its stride (rounding up), so ``(B, C, *S)`` becomes
    ``(B, channels[-1], *ceil(S / prod(strides)))``.

    Args:
        in_channels: channels of the input.
        channels: output channels of each layer.
        dims: number of spatial dimensions (1: sequences, 2: images, 3: volumes).
        kernel_size: kernel size of every layer (odd).
        strides: stride of every layer, or one per layer.
        dilations: dilation of every layer, or one per layer.
        norm: ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"`` (over channels) or ``"none"``.
        act: activation name.

    >>> import torch
    >>> ConvStack(1, (8, 16), dims=3, strides=(1, 2))(torch.zeros(2, 1, 8, 16, 16)).shape
    torch.Size([2, 16, 4, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        dims: Literal[1, 2, 3] = 2,
        kernel_size: int = 3,
        strides: int | Sequence[int] = 1,
        dilations: int | Sequence[int] = 1,
        norm: str | None = "batchnorm",
        act: str = "relu",
    ) -> None:
        strides = _per_layer(strides, len(channels), "strides")
        dilations = _per_layer(dilations, len(channels), "dilations")
        layers: list[nn.Module] = []
        prev = in_channels
        for out, stride, dilation in zip(channels, strides, dilations, strict=True):
            layers.append(ConvNormAct(prev, out, kernel_size, stride, dilation=dilation, norm=norm, act=act, dims=dims))
            prev = out
        super().__init__(*layers)
        self.out_channels = prev


def conv_stages(
    in_channels: int,
    channels: Sequence[int],
    blocks_per_stage: int,
    dims: Literal[1, 2, 3] = 2,
    norm: str | None = "batchnorm",
    act: str = "relu",
) -> nn.Sequential:
    """Stages of :class:`ConvStack` blocks; each stage after the first starts with a stride-2 conv.

    ``(B, C, *S)`` becomes ``(B, channels[-1], *ceil(S / 2 ** (len(channels) - 1)))``.

    >>> import torch
    >>> conv_stages(3, (8, 16), blocks_per_stage=2)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 16, 16, 16])
    """
    if blocks_per_stage < 1 or not channels:
        raise ValueError(f"need at least one stage and one block per stage, got {channels} x {blocks_per_stage}")
    stages, prev = [], in_channels
    for index, out in enumerate(channels):
        strides = [2 if index > 0 and block == 0 else 1 for block in range(blocks_per_stage)]
        stages.append(ConvStack(prev, (out,) * blocks_per_stage, dims, strides=strides, norm=norm, act=act))
        prev = out
    return nn.Sequential(*stages)


class Conv1dStack(ConvStack):
    """:class:`ConvStack` over sequences: ``(B, C, T) -> (B, channels[-1], ceil(T / prod(strides)))``.

    >>> import torch
    >>> Conv1dStack(3, (16, 32), strides=2)(torch.zeros(4, 3, 100)).shape
    torch.Size([4, 32, 25])
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel_size: int = 3,
        strides: int | Sequence[int] = 1,
        dilations: int | Sequence[int] = 1,
        norm: str | None = "batchnorm",
        act: str = "relu",
    ) -> None:
        super().__init__(in_channels, channels, 1, kernel_size, strides, dilations, norm, act)


class DilatedConvStack(nn.Module):
    """2-d convs of constant width with growing dilation; ``(B, C, H, W) -> (B, C, H, W)``.

    With the default dilations ``(1, 2, 4, 8)`` and 3x3 kernels the receptive field grows to 31x31 at full
    resolution (Yu & Koltun, 2016). With ``residual=True`` the input is added to the output.

    Args:
        channels: input and output channels.
        dilations: dilation of each layer.
        kernel_size: kernel size of every layer (odd).
        norm: norm name, see :class:`ConvStack`.
        act: activation name.
        residual: add the input to the output.
    """

    def __init__(
        self,
        channels: int,
        dilations: Sequence[int] = (1, 2, 4, 8),
        kernel_size: int = 3,
        norm: str | None = "batchnorm",
        act: str = "relu",
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.layers = ConvStack(channels, (channels,) * len(dilations), 2, kernel_size, 1, dilations, norm, act)
        self.residual = residual
        self.receptive_field = 1 + (kernel_size - 1) * sum(dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class UpsampleBlock(nn.Module):
    """Transposed conv (kernel = stride = ``scale_factor``) -> norm -> act, then an optional skip fusion.

    ``(B, C_in, H, W) -> (B, C_out, H * s, W * s)``. A kernel equal to the stride makes the output patches tile
    without overlap, which avoids the checkerboard artefacts of overlapping transposed convs (the U-Net "up-conv").
    With ``skip_channels > 0``, ``forward(x, skip)`` concatenates ``skip`` (same size as the upsampled map) and fuses
    it with a 3x3 conv-norm-act.

    >>> import torch
    >>> block = UpsampleBlock(32, 16, skip_channels=8)
    >>> block(torch.zeros(2, 32, 4, 4), torch.zeros(2, 8, 8, 8)).shape
    torch.Size([2, 16, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale_factor: int = 2,
        skip_channels: int = 0,
        norm: str | None = "batchnorm",
        act: str = "relu",
    ) -> None:
        super().__init__()
        has_norm = (norm or "none").lower() != "none"
        self.up = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, scale_factor, scale_factor, bias=not has_norm),
            get_norm_layer(norm, dims=2)(out_channels),
            get_act_layer(act)(),
        )
        self.skip_channels = skip_channels
        self.fuse = (
            ConvNormAct(out_channels + skip_channels, out_channels, 3, norm=norm, act=act) if skip_channels else None
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)  # (B, C_out, H * s, W * s)
        if self.fuse is None:
            if skip is not None:
                raise ValueError("UpsampleBlock was built with skip_channels=0 but got a skip tensor")
            return x
        if skip is None or skip.shape[2:] != x.shape[2:]:
            got = None if skip is None else tuple(skip.shape)
            raise ValueError(
                f"UpsampleBlock expects a skip of shape (B, {self.skip_channels}, *{tuple(x.shape[2:])}), got {got}"
            )
        return self.fuse(torch.cat([x, skip], dim=1))  # (B, C_out + C_skip, H * s, W * s) -> (B, C_out, H * s, W * s)
