"""Image denoisers on the :class:`~zoo.tasks.Denoiser` task: a DnCNN/IRCNN noise predictor and a U-Net.

- :class:`DnCNN`: conv-ReLU, a stack of conv-BN-ReLU layers, then a conv that predicts the noise, which is
  subtracted from the input (residual learning, Zhang et al., 2017). With growing dilations
  (``(2, 3, 4, 3, 2)``, the IRCNN denoiser of Zhang et al., 2017) seven layers see a 33x33 window.
- :class:`UNetDenoiser`: an encoder of conv stages that halve the resolution, a decoder of transposed-conv
  up-sampling blocks fused with the encoder's skips (Ronneberger et al., 2015), and a residual output.

Both map images in [0, 1] pixel units to the same units and accept any size their strides divide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.layers import ConvNormAct, DilatedConvStack, UpsampleBlock, conv_stages
from zoo.registry import register_model
from zoo.tasks import Denoiser


class DnCNN(Denoiser):
    """Residual denoiser: ``output = noisy - net(noisy)``, where ``net`` predicts the noise.

    Args:
        in_channels: image channels.
        img_size: nominal input size; any size works.
        width: channels of the hidden layers.
        dilations: dilation of each middle conv-BN-ReLU layer (``(1,) * 15``: DnCNN-S; ``(2, 3, 4, 3, 2)``: IRCNN).
        norm: norm of the middle layers.
        act: activation name.
        **task_args: noise model, loss, optimizer and schedule, see :class:`~zoo.tasks.Denoiser`.

    >>> model = DnCNN(in_channels=1, dilations=(2, 3, 4, 3, 2))
    >>> model(torch.rand(2, 1, 28, 28)).shape, model.receptive_field
    (torch.Size([2, 1, 28, 28]), 33)
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        width: int = 64,
        dilations: Sequence[int] = (1,) * 15,
        norm: str = "batchnorm",
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        super().__init__(in_channels=in_channels, img_size=img_size, **task_args)
        self.head = ConvNormAct(in_channels, width, 3, norm="none", act=act)
        self.body = DilatedConvStack(width, tuple(dilations), 3, norm=norm, act=act, residual=False)
        self.tail = nn.Conv2d(width, in_channels, 3, padding=1)
        #: Side of the square window one output pixel sees.
        self.receptive_field = self.body.receptive_field + 4  # the head and tail 3x3 convs add 2 pixels each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return x - self.tail(self.body(self.head(x)))  # (B, C, H, W): noisy minus the predicted noise


class UNetDenoiser(Denoiser):
    """U-Net with transposed-conv up-sampling and a residual output: ``output = noisy + net(noisy)``.

    Args:
        in_channels: image channels.
        img_size: nominal input size; height and width must be divisible by ``2 ** (len(widths) - 1)``.
        widths: channels of each resolution level, full resolution first.
        blocks_per_level: conv-norm-act blocks per encoder level.
        norm: norm name.
        act: activation name.
        **task_args: noise model, loss, optimizer and schedule, see :class:`~zoo.tasks.Denoiser`.

    >>> UNetDenoiser(in_channels=3, widths=(16, 32, 64))(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        widths: Sequence[int] = (32, 64, 128),
        blocks_per_level: int = 2,
        norm: str = "batchnorm",
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        super().__init__(in_channels=in_channels, img_size=img_size, **task_args)
        widths = tuple(widths)
        self.encoder = conv_stages(in_channels, widths, blocks_per_level, dims=2, norm=norm, act=act)
        self.decoder = nn.ModuleList(
            UpsampleBlock(deep, shallow, skip_channels=shallow, norm=norm, act=act)
            for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.out = nn.Conv2d(widths[0], in_channels, 1)
        self.stride = 2 ** (len(widths) - 1)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(
                f"{type(self).__name__} expects height and width divisible by {self.stride}, got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        skips = []
        h = x
        for stage in self.encoder:
            h = stage(h)  # level i: (B, widths[i], H / 2^i, W / 2^i)
            skips.append(h)
        for block, skip in zip(self.decoder, skips[-2::-1], strict=True):
            h = block(h, skip)  # up one level, fused with the encoder's map of that size
        return x + self.out(h)


@register_model(
    DnCNN, input_size=(1, 28, 28), num_params=556_097, source="DnCNN-S, Zhang et al. 2017", task="denoising"
)
def dncnn_s() -> dict[str, Any]:
    """DnCNN-S: 17 layers of 64 channels for grayscale images."""
    return dict(in_channels=1, img_size=28, width=64, dilations=(1,) * 15)


@register_model(DnCNN, input_size=(1, 28, 28), num_params=186_177, source="IRCNN, Zhang et al. 2017", task="denoising")
def ircnn() -> dict[str, Any]:
    """IRCNN: seven layers with dilations 1-2-3-4-3-2-1 (a 33x33 window) for grayscale images."""
    return dict(in_channels=1, img_size=28, width=64, dilations=(2, 3, 4, 3, 2))


@register_model(
    UNetDenoiser, input_size=(1, 28, 28), num_params=420_417, source="U-Net, Ronneberger et al. 2015", task="denoising"
)
def unet_denoiser_small() -> dict[str, Any]:
    """Three levels (32, 64, 128) for grayscale images whose sides are divisible by 4."""
    return dict(in_channels=1, img_size=28, widths=(32, 64, 128), blocks_per_level=2)
