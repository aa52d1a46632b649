"""Image denoisers on the :class:`~zoo.tasks.Denoiser` task: a DnCNN/IRCNN noise predictor and a U-Net.

- :class:`DnCNN`: conv-ReLU, a stack of conv-BN-ReLU layers, then a conv that predicts the noise, which is
  subtracted from the input (residual learning, Zhang et al., 2017). With growing dilations
  (``(2, 3, 4, 3, 2)``, the IRCNN denoiser of Zhang et al., 2017) seven layers see a 33x33 window.
- :class:`UNetDenoiser`: an encoder of conv stages that halve the resolution, a decoder of transposed-conv
  up-sampling blocks fused with the encoder's skips (Ronneberger et al., 2015), and a residual output.
- :class:`UNet`: the textbook U-Net (Ronneberger et al., 2015, with padded convs as commonly implemented): levels of
  two conv3x3-BN-ReLU, max-pool down-sampling, 2x2 transposed-conv up-sampling to half the channels, concatenated
  skips and a 1x1 output conv; 31,042,369 parameters with one channel in and out and widths 64 to 1024, as in the
  widely used PyTorch implementations, whose 3x3 convs keep their bias before BatchNorm (5,888 of the parameters).
  Options: a residual encoder (each level's double conv around an identity or 1x1-projection shortcut, as in ResUNet,
  Zhang et al., 2018) and additive attention gates on the skips (Attention U-Net, Oktay et al., 2018).

All map images in [0, 1] pixel units to the same units and accept any size their strides divide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers import (
    ConvNormAct,
    DilatedConvStack,
    UpsampleBlock,
    conv_stages,
    get_norm_layer,
    inplace_activation,
)
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


def _conv3x3_norm_act(in_channels: int, out_channels: int, norm: str, act: str) -> list[nn.Module]:
    # The conv keeps its bias before the norm, as the textbook U-Net's common implementations do (their parameter
    # count includes it); the norm cancels it, so it only costs parameters.
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
    return [conv, get_norm_layer(norm, dims=2)(out_channels), inplace_activation(act)]


class DoubleConv(nn.Sequential):
    """``[conv3x3 -> norm -> act] x 2``, one U-Net level: ``(B, C_in, H, W) -> (B, C_out, H, W)``.

    >>> DoubleConv(1, 8)(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batchnorm", act: str = "relu") -> None:
        super().__init__(*_conv3x3_norm_act(in_channels, out_channels, norm, act))
        self.extend(_conv3x3_norm_act(out_channels, out_channels, norm, act))


class ResidualDoubleConv(nn.Module):
    """:class:`DoubleConv` around a shortcut, a ResUNet encoder level: ``act(body(x) + shortcut(x))``.

    The body is the double conv without its last activation, which follows the sum as in a ResNet basic block. The
    shortcut is the identity when the channels stay, else a 1x1 conv and norm (ResNet's projection, without bias
    before the norm).

    >>> level = ResidualDoubleConv(1, 8)
    >>> level(torch.zeros(2, 1, 16, 16)).shape, type(level.shortcut[0]).__name__
    (torch.Size([2, 8, 16, 16]), 'Conv2d')
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batchnorm", act: str = "relu") -> None:
        super().__init__()
        layers = _conv3x3_norm_act(in_channels, out_channels, norm, act) + _conv3x3_norm_act(
            out_channels, out_channels, norm, act
        )
        self.body = nn.Sequential(*layers[:-1])
        self.act = layers[-1]
        has_norm = (norm or "none").lower() != "none"
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=not has_norm), get_norm_layer(norm, dims=2)(out_channels)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))  # (B, C_out, H, W)


class AttentionGate(nn.Module):
    """Additive attention gate on a skip (Oktay et al., 2018): ``skip * alpha``, ``alpha`` in (0, 1) per pixel.

    ``alpha = up(sigmoid(psi(relu(W_x skip + W_g gate + b_g)) + b_psi))``: the skip ``(B, C_x, H, W)`` is brought to
    the gating signal's grid ``(B, C_g, H / 2, W / 2)`` by a 2x2 stride-2 conv ``W_x`` (no bias), the gate by a 1x1
    conv ``W_g``; ``psi`` is a 1x1 conv to one channel, and the coefficients are resampled bilinearly to the skip's
    size, as in the authors' grid attention.

    >>> gate = AttentionGate(skip_channels=8, gate_channels=16)
    >>> gated, alpha = gate(torch.zeros(2, 8, 16, 16), torch.zeros(2, 16, 8, 8))
    >>> gated.shape, alpha.shape
    (torch.Size([2, 8, 16, 16]), torch.Size([2, 1, 16, 16]))
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter_channels = inter_channels or max(1, skip_channels // 2)
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)  # W_x
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)  # W_g and b_g
        self.psi = nn.Conv2d(inter_channels, 1, 1)  # psi and b_psi

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated skip ``(B, C_x, H, W)`` and the coefficients ``(B, 1, H, W)``."""
        q = F.relu(self.theta(skip) + self.phi(gate))  # (B, C_int, H / 2, W / 2)
        alpha = torch.sigmoid(self.psi(q))  # (B, 1, H / 2, W / 2)
        # A convex combination of values in (0, 1): the resampled coefficients stay in (0, 1).
        alpha = F.interpolate(alpha, size=skip.shape[2:], mode="bilinear", align_corners=False)  # (B, 1, H, W)
        return skip * alpha, alpha


class UNetUpBlock(nn.Module):
    """One U-Net decoder level: 2x2 stride-2 transposed conv to the skip's width, (gated) skip concatenated, then a
    :class:`DoubleConv`: ``(B, C_deep, H, W), (B, C_skip, 2H, 2W) -> (B, C_skip, 2H, 2W)``.

    With ``attention_gate`` the skip passes an :class:`AttentionGate` whose gating signal is the deeper input.
    """

    def __init__(
        self,
        deep_channels: int,
        skip_channels: int,
        attention_gate: bool = False,
        norm: str = "batchnorm",
        act: str = "relu",
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(deep_channels, skip_channels, 2, stride=2)
        self.gate = AttentionGate(skip_channels, deep_channels) if attention_gate else None
        self.conv = DoubleConv(2 * skip_channels, skip_channels, norm, act)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The fused map and the gate's coefficients (``None`` without a gate)."""
        alpha = None
        if self.gate is not None:
            skip, alpha = self.gate(skip, x)
        up = self.up(x)  # (B, C_skip, 2H, 2W)
        return self.conv(torch.cat([skip, up], dim=1)), alpha  # (B, 2 C_skip, 2H, 2W) -> (B, C_skip, 2H, 2W)


class UNet(Denoiser):
    """The textbook U-Net (Ronneberger et al., 2015, with padded convs) as a denoiser, with ResUNet and Attention
    U-Net options.

    Each encoder level is a :class:`DoubleConv` (conv3x3-norm-act twice; with ``encoder="residual"`` a
    :class:`ResidualDoubleConv`, the bottleneck included), levels after the first start with a 2x2 max-pool, and each
    decoder level is a :class:`UNetUpBlock`. The 3x3 convs keep their bias before the norm, which the textbook's
    31,042,369 parameters (one channel in and out) count. The textbook network maps its input straight to the output
    (``residual_output=False``, the default); ``residual_output=True`` returns ``noisy + net(noisy)`` instead.

    Args:
        in_channels: image channels (in and out).
        img_size: nominal input size; height and width must be divisible by ``2 ** (len(widths) - 1)`` (16 by
            default).
        widths: channels of each level, full resolution first; the last is the bottleneck.
        encoder: ``"double"`` (textbook) or ``"residual"`` (each encoder level around a shortcut, ResUNet).
        attention_gates: gate each skip with an :class:`AttentionGate` whose gating signal is the deeper decoder
            feature (Attention U-Net, Oktay et al., 2018).
        residual_output: return ``noisy + net(noisy)`` rather than ``net(noisy)``.
        norm: norm name.
        act: activation name.
        **task_args: noise model, loss, optimizer and schedule, see :class:`~zoo.tasks.Denoiser`.

    >>> model = UNet(widths=(8, 16, 32), attention_gates=True)
    >>> model(torch.rand(2, 1, 32, 32)).shape, model.attention_maps(torch.rand(2, 1, 32, 32))["decoder.1"].shape
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 64,
        widths: Sequence[int] = (64, 128, 256, 512, 1024),
        encoder: Literal["double", "residual"] = "double",
        attention_gates: bool = False,
        residual_output: bool = False,
        norm: str = "batchnorm",
        act: str = "relu",
        **task_args: Any,
    ) -> None:
        super().__init__(in_channels=in_channels, img_size=img_size, **task_args)
        widths = tuple(widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs at least two positive entries (levels and bottleneck), got {widths}")
        if encoder not in ("double", "residual"):
            raise ValueError(f"Unknown encoder {encoder!r}; choose 'double' or 'residual'.")
        self.stride = 2 ** (len(widths) - 1)
        if self.img_size[0] % self.stride or self.img_size[1] % self.stride:
            raise ValueError(f"{type(self).__name__} needs img_size divisible by {self.stride}, got {self.img_size}")
        level = DoubleConv if encoder == "double" else ResidualDoubleConv
        self.encoder = nn.ModuleList(
            level(prev, width, norm, act) for prev, width in zip((in_channels, *widths[:-1]), widths, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UNetUpBlock(deep, shallow, attention_gates, norm, act)
            for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.out = nn.Conv2d(widths[0], in_channels, 1)
        self.residual_output = residual_output

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(
                f"{type(self).__name__} expects height and width divisible by {self.stride}, got {tuple(x.shape)}"
            )

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.check_input(x)
        skips = []
        h = x
        for index, level in enumerate(self.encoder):
            h = level(self.pool(h) if index else h)  # level i: (B, widths[i], H / 2^i, W / 2^i)
            skips.append(h)
        maps = {}
        for index, (block, skip) in enumerate(zip(self.decoder, skips[-2::-1], strict=True)):
            h, alpha = block(h, skip)  # up one level, fused with the encoder's map of that size
            if alpha is not None:
                maps[f"decoder.{index}"] = alpha
        out = self.out(h)  # (B, C, H, W)
        return (x + out if self.residual_output else out), maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x)[0]

    def attention_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each gate's coefficients ``(B, 1, H_i, W_i)`` in eval mode, named by decoder block (``decoder.0``: the
        deepest skip, ``H / 2 ** (len(widths) - 2)``; the last: full resolution)."""
        if not self.hparams.attention_gates:
            raise ValueError(f"{type(self).__name__} was built with attention_gates=False: it has no gates to show")
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self._forward(x)[1]
        finally:
            self.train(was_training)


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


@register_model(
    UNet, input_size=(1, 64, 64), num_params=31_042_369, source="U-Net, Ronneberger et al. 2015", task="denoising"
)
def unet() -> dict[str, Any]:
    """The textbook U-Net: levels of 64, 128, 256 and 512 channels and a 1024-channel bottleneck, grayscale."""
    return dict(in_channels=1, img_size=64, widths=(64, 128, 256, 512, 1024))


@register_model(
    UNet, input_size=(1, 64, 64), num_params=31_742_721, source="ResUNet, Zhang et al. 2018", task="denoising"
)
def unet_residual() -> dict[str, Any]:
    """The textbook U-Net with a residual encoder: each encoder level around an identity or 1x1 projection."""
    return dict(in_channels=1, img_size=64, widths=(64, 128, 256, 512, 1024), encoder="residual")


@register_model(
    UNet, input_size=(1, 64, 64), num_params=32_087_813, source="Attention U-Net, Oktay et al. 2018", task="denoising"
)
def unet_attention() -> dict[str, Any]:
    """The textbook U-Net with an additive attention gate on each skip."""
    return dict(in_channels=1, img_size=64, widths=(64, 128, 256, 512, 1024), attention_gates=True)


@register_model(
    UNet, input_size=(1, 32, 32), num_params=1_943_761, source="U-Net, Ronneberger et al. 2015", task="denoising"
)
def unet_small() -> dict[str, Any]:
    """The textbook U-Net at a quarter of the widths (16 to 256) for CPU studies (any side divisible by 16)."""
    return dict(in_channels=1, img_size=32, widths=(16, 32, 64, 128, 256))


@register_model(
    UNet, input_size=(1, 32, 32), num_params=1_988_289, source="ResUNet, Zhang et al. 2018", task="denoising"
)
def unet_residual_small() -> dict[str, Any]:
    """:func:`unet_residual` at a quarter of the widths (16 to 256) for CPU studies."""
    return dict(in_channels=1, img_size=32, widths=(16, 32, 64, 128, 256), encoder="residual")


@register_model(
    UNet, input_size=(1, 32, 32), num_params=2_009_285, source="Attention U-Net, Oktay et al. 2018", task="denoising"
)
def unet_attention_small() -> dict[str, Any]:
    """:func:`unet_attention` at a quarter of the widths (16 to 256) for CPU studies."""
    return dict(in_channels=1, img_size=32, widths=(16, 32, 64, 128, 256), attention_gates=True)
