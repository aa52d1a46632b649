"""DenseNet-BC (Huang et al., 2017, "Densely Connected Convolutional Networks").

Each layer of a dense block sees the concatenation of all earlier feature maps of the block and adds ``growth_rate``
new channels; "B" is the 1x1 bottleneck (to ``bn_size * growth_rate`` channels) before each 3x3 conv, "C" the
transition that compresses the channels by ``compression`` before each 2x2 average pooling.

Checked against ``torchvision.models.densenet`` (v0.29): densenet121 has its 7,978,856 parameters. What differs:
``stem="cifar"`` (one 3x3 conv to ``2 * growth_rate`` channels, no pooling, as in the paper's CIFAR models), and a
plain ``torch.cat`` per layer instead of torchvision's optional gradient checkpointing (more memory, simpler code).
The CIFAR preset is the small DenseNet-BC (L=40, k=12), 176,122 parameters, quick on CPU; the paper's
DenseNet-BC (L=100, k=12) is ``densenet_bc40_cifar(block_config=(16, 16, 16))`` with 769,162 parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from zoo.layers import InitScheme, get_act_layer, get_norm_layer, init_weights
from zoo.registry import register_model
from zoo.tasks import ImageClassifier

NormLayer = Callable[[int], nn.Module]


class DenseLayer(nn.Module):
    """norm -> act -> 1x1 conv -> norm -> act -> 3x3 conv (-> dropout); returns the input with the new maps appended."""

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        norm_layer: NormLayer,
        act_layer: type[nn.Module],
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = norm_layer(bn_size * growth_rate)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.act = act_layer()
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv1(self.act(self.norm1(x)))  # (B, bn_size * growth_rate, H, W)
        new = self.drop(self.conv2(self.act(self.norm2(new))))  # (B, growth_rate, H, W)
        return torch.cat([x, new], dim=1)  # (B, C + growth_rate, H, W)


class Transition(nn.Sequential):
    """norm -> act -> 1x1 conv (compression) -> 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, norm_layer: NormLayer, act_layer: type[nn.Module]):
        super().__init__(
            OrderedDict(
                norm=norm_layer(in_channels),
                act=act_layer(),
                conv=nn.Conv2d(in_channels, out_channels, 1, bias=False),
                pool=nn.AvgPool2d(2),
            )
        )


class DenseNet(ImageClassifier):
    """DenseNet-BC: a stem, dense blocks separated by transitions, a final norm -> act and global pooling.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (for summaries and export); any size works.
        growth_rate: channels added by each dense layer (``k`` in the paper).
        block_config: number of dense layers in each block.
        stem_width: output channels of the stem conv (``2k`` in the paper's BC models).
        bn_size: bottleneck width as a multiple of ``growth_rate``.
        compression: fraction of channels a transition keeps (``theta``; 1.0 disables compression).
        stem: ``"imagenet"`` (7x7/2 conv, norm, act, 3x3/2 max-pool) or ``"cifar"`` (3x3/1 conv).
        norm: norm name, see :func:`~zoo.layers.get_norm_layer`.
        act: activation name.
        drop_rate: dropout after each dense layer.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        stem_width: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        stem: Literal["imagenet", "cifar"] = "imagenet",
        norm: str = "batchnorm",
        act: str = "relu",
        drop_rate: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if not 0 < compression <= 1 or not block_config or min(block_config) < 1:
            raise ValueError(
                f"need compression in (0, 1] and at least one layer per block, got {compression}, {block_config}"
            )
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"Unknown stem {stem!r}; choose 'imagenet' or 'cifar'.")
        norm_layer, act_layer = get_norm_layer(norm, dims=2), get_act_layer(act)

        if stem == "imagenet":
            self.stem = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, stem_width, 7, 2, padding=3, bias=False),
                    norm=norm_layer(stem_width),
                    act=act_layer(),
                    pool=nn.MaxPool2d(3, 2, padding=1),
                )
            )
        else:  # the first dense layer normalizes and activates its input itself
            self.stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False)))

        stages: list[nn.Module] = []
        channels = stem_width
        for index, num_layers in enumerate(block_config):
            block = []
            for _ in range(num_layers):
                block.append(DenseLayer(channels, growth_rate, bn_size, drop_rate, norm_layer, act_layer))
                channels += growth_rate
            stages.append(nn.Sequential(*block))
            if index < len(block_config) - 1:
                out_channels = int(channels * compression)
                stages.append(Transition(channels, out_channels, norm_layer, act_layer))
                channels = out_channels
        self.features = nn.Sequential(*stages)
        self.final = nn.Sequential(norm_layer(channels), act_layer())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = channels
        self.head = nn.Linear(channels, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.stem(x))  # (B, num_features, H/32, W/32) (ImageNet stem) or (B, num_features, H/4, W/4)
        return self.pool(self.final(x))  # (B, num_features)


@register_model(
    DenseNet,
    input_size=(3, 224, 224),
    num_params=7_978_856,
    source="torchvision.models.densenet121",
    tags=("imagenet",),
)
def densenet121() -> dict[str, Any]:
    """DenseNet-121: growth rate 32, blocks (6, 12, 24, 16), ImageNet stem, 1000 classes."""
    return dict(growth_rate=32, block_config=(6, 12, 24, 16), stem_width=64)


@register_model(
    DenseNet,
    input_size=(3, 32, 32),
    num_params=176_122,
    source="DenseNet-BC (L=40, k=12), Huang et al. 2017",
    tags=("cifar",),
)
def densenet_bc40_cifar() -> dict[str, Any]:
    """DenseNet-BC, depth 40 (three blocks of 6 layers), growth rate 12, for 3x32x32 images, 10 classes."""
    return dict(num_classes=10, img_size=32, growth_rate=12, block_config=(6, 6, 6), stem_width=24, stem="cifar")
