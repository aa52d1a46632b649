"""EfficientNet (Tan & Le, 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks").

A stem conv, seven stages of MBConv blocks (Sandler et al., 2018: 1x1 expansion -> depthwise conv ->
squeeze-and-excitation -> linear 1x1 projection, residual when the shape is kept, with stochastic depth on the
residual branch), a 1x1 head conv to ``4 x`` the last width, global pooling, dropout and a linear classifier.
``width_mult``/``depth_mult`` scale channels (rounded to multiples of 8) and blocks per stage (rounded up) as in
the paper, so b1-b7 are ``efficientnet_b0(width_mult=..., depth_mult=..., img_size=...)``.

Checked against ``torchvision.models.efficientnet`` (v0.29): efficientnet_b0 has its 5,288,548 parameters and
:func:`from_torchvision` maps its state dict so outputs agree to float precision. The stochastic-depth rate grows
linearly over blocks from 0 to ``drop_path_rate`` (exclusive), as in torchvision. What differs: the CIFAR preset uses
a stride-1 stem and a stride-1 second stage (as in kuangliu/pytorch-cifar), so 32x32 inputs end at 4x4, not 1x1;
weights use :func:`~zoo.layers.init_weights` (Kaiming) rather than torchvision's scheme.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from timm.layers import DropPath, make_divisible
from torch import nn
from torchvision.ops import SqueezeExcitation

from zoo.layers import ConvNormAct, InitScheme, get_act_layer, init_weights
from zoo.registry import register_model
from zoo.tasks import ImageClassifier

#: EfficientNet-B0 stages (Table 1 of the paper): (expand_ratio, kernel_size, out_channels, num_blocks).
#: The strides are an init argument so that small-image variants can drop downsampling steps.
B0_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 3, 16, 1),
    (6, 3, 24, 2),
    (6, 5, 40, 2),
    (6, 3, 80, 3),
    (6, 5, 112, 3),
    (6, 5, 192, 4),
    (6, 3, 320, 1),
)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation: ``x + drop_path(project(se(dw(expand(x)))))``.

    Args:
        in_channels: input channels.
        out_channels: output channels; the residual is used when they equal ``in_channels`` and ``stride == 1``.
        expand_ratio: expansion of the hidden width (1 skips the expansion conv).
        kernel_size: kernel size of the depthwise conv.
        stride: stride of the depthwise conv.
        se_ratio: squeeze width as a fraction of ``in_channels`` (of the block input, as in the paper).
        drop_path: stochastic-depth probability of the residual branch.
        norm: norm name.
        act: activation name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        se_ratio: float = 0.25,
        drop_path: float = 0.0,
        norm: str = "batchnorm",
        act: str = "silu",
    ) -> None:
        super().__init__()
        hidden = make_divisible(in_channels * expand_ratio)
        self.expand = (
            ConvNormAct(in_channels, hidden, 1, norm=norm, act=act) if hidden != in_channels else nn.Identity()
        )
        self.dw = ConvNormAct(hidden, hidden, kernel_size, stride, groups=hidden, norm=norm, act=act)
        self.se = SqueezeExcitation(hidden, max(1, int(in_channels * se_ratio)), activation=get_act_layer(act))
        self.project = ConvNormAct(hidden, out_channels, 1, norm=norm, act="identity")  # linear bottleneck
        self.has_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dw(self.expand(x))  # (B, hidden, H / stride, W / stride)
        out = self.project(self.se(out))  # (B, out_channels, H / stride, W / stride)
        return x + self.drop_path(out) if self.has_residual else out


class EfficientNet(ImageClassifier):
    """EfficientNet built from the B0 stage table scaled by ``width_mult`` and ``depth_mult``.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (for summaries and export); any size works.
        width_mult: channel multiplier (B0: 1.0, B1: 1.0, B2: 1.1, ... B7: 2.0).
        depth_mult: blocks-per-stage multiplier (B0: 1.0, B1: 1.1, ... B7: 3.1).
        stem_stride: stride of the 3x3 stem conv.
        stage_strides: stride of the first block of each of the seven stages.
        se_ratio: squeeze-and-excitation width as a fraction of each block's input channels.
        norm: norm name.
        act: activation name.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic-depth probability reached (exclusive) by the last block.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        stem_stride: int = 2,
        stage_strides: tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1),
        se_ratio: float = 0.25,
        norm: str = "batchnorm",
        act: str = "silu",
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.2,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if len(stage_strides) != len(B0_STAGES) or not set(stage_strides) <= {1, 2}:
            raise ValueError(f"stage_strides needs {len(B0_STAGES)} entries of 1 or 2, got {stage_strides}")
        if width_mult <= 0 or depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be positive, got {width_mult} and {depth_mult}")
        stem_width = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(in_channels, stem_width, 3, stem_stride, norm=norm, act=act)

        depths = [math.ceil(num_blocks * depth_mult) for *_, num_blocks in B0_STAGES]
        total_blocks, block_index = sum(depths), 0
        stages: list[nn.Module] = []
        prev = stem_width
        for (expand_ratio, kernel_size, width, _), depth, stride in zip(B0_STAGES, depths, stage_strides, strict=True):
            out = make_divisible(width * width_mult)
            blocks = []
            for index in range(depth):
                drop_path = drop_path_rate * block_index / total_blocks
                block_stride = stride if index == 0 else 1
                blocks.append(
                    MBConv(prev, out, expand_ratio, kernel_size, block_stride, se_ratio, drop_path, norm, act)
                )
                prev, block_index = out, block_index + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_features = 4 * prev
        self.conv_head = ConvNormAct(prev, self.num_features, 1, norm=norm, act=act)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate))
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, 320 * width_mult, H / 32, W / 32) with the default strides
        return self.pool(self.conv_head(x))  # (B, num_features)


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a ``torchvision.models.efficientnet_b*`` state dict to :class:`EfficientNet`'s layout.

    Build the model with the checkpoint's ``width_mult``/``depth_mult`` and ``num_classes``.
    """
    last = max(int(key.split(".")[1]) for key in state_dict if key.startswith("features."))
    converted = {}
    for key, value in state_dict.items():
        if match := re.match(r"features\.(\d+)\.(\d+)\.block\.(\d)\.(.*)", key):
            stage, block, part, rest = match.groups()
            # torchvision numbers the parts of a block; the expansion conv is absent when expand_ratio == 1.
            has_expand = f"features.{stage}.{block}.block.3.0.weight" in state_dict
            name = ("expand", "dw", "se", "project")[int(part) + (not has_expand)]
            key = f"stages.{int(stage) - 1}.{block}.{name}.{rest}"
        elif key.startswith("features.0."):
            key = "stem." + key.removeprefix("features.0.")
        elif key.startswith(f"features.{last}."):
            key = "conv_head." + key.removeprefix(f"features.{last}.")
        elif key.startswith("classifier.1."):
            key = "head." + key.removeprefix("classifier.1.")
        converted[key] = value
    return converted


@register_model(
    EfficientNet,
    input_size=(3, 224, 224),
    num_params=5_288_548,
    source="torchvision.models.efficientnet_b0",
    tags=("imagenet",),
)
def efficientnet_b0() -> dict[str, Any]:
    """EfficientNet-B0 for 224x224 images, 1000 classes."""
    return dict(width_mult=1.0, depth_mult=1.0)


@register_model(
    EfficientNet, input_size=(3, 32, 32), num_params=4_020_358, source="EfficientNet-B0, CIFAR strides", tags=("cifar",)
)
def efficientnet_b0_cifar() -> dict[str, Any]:
    """EfficientNet-B0 with a stride-1 stem and second stage (overall stride 8) for 3x32x32 images, 10 classes."""
    return dict(num_classes=10, img_size=32, stem_stride=1, stage_strides=(1, 1, 2, 2, 1, 2, 1))
