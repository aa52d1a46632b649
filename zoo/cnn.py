"""Convolutional classifiers: a LeNet-style conv-pool net and a modern BatchNorm net.

- :class:`SimpleCNN`: ``[conv -> act -> max-pool] x stages -> flatten -> FC -> FC`` (LeCun et al., 1998 style).
  The flatten size follows from ``img_size``, so it needs exactly that input size.
- :class:`CNN`: stages of conv-BN-ReLU blocks, the first block of each later stage with stride 2, then global
  average pooling and a linear head (the layout of VGG-style CIFAR baselines with BatchNorm, Ioffe & Szegedy, 2015).
  Any input size works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from zoo.layers import InitScheme, conv_stages, get_act_layer, init_weights
from zoo.registry import register_model
from zoo.tasks import ImageClassifier


class SimpleCNN(ImageClassifier):
    """Conv-pool feature extractor with a fully connected classifier.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: image height and width; each stage halves them (floor).
        channels: output channels of each conv stage.
        hidden_dim: width of the fully connected hidden layer.
        act: activation name.
        norm: ``"batchnorm"`` after each convolution (which then has no bias), or ``"none"``.
        dropout: dropout before the last layer.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        channels: Sequence[int] = (32, 64),
        hidden_dim: int = 128,
        act: str = "relu",
        norm: Literal["none", "batchnorm"] = "none",
        dropout: float = 0.25,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        height, width = self.img_size
        if min(height, width) < 2 ** len(channels):
            raise ValueError(f"img_size {self.img_size} is too small for {len(channels)} pooling stages")
        if norm not in ("none", "batchnorm"):
            raise ValueError(f"norm must be 'none' or 'batchnorm', got {norm!r}")
        act_layer = get_act_layer(act)
        layers: list[nn.Module] = []
        prev = in_channels
        for out in channels:
            if norm == "batchnorm":
                layers += [nn.Conv2d(prev, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)]
            else:
                layers.append(nn.Conv2d(prev, out, 3, padding=1))
            layers += [act_layer(), nn.MaxPool2d(2)]
            prev, height, width = out, height // 2, width // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(prev * height * width, hidden_dim), act_layer(), nn.Dropout(dropout)
        )
        self.num_features = hidden_dim
        self.head = nn.Linear(hidden_dim, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (B, C, H, W) -> (B, channels[-1], H/2^s, W/2^s) -> (B, hidden_dim)


class CNN(ImageClassifier):
    """Stages of conv-norm-act blocks with global average pooling.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (for summaries and export); any size works.
        channels: output channels of each stage; stages after the first start with a stride-2 conv.
        blocks_per_stage: conv-norm-act blocks in each stage.
        norm: ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"`` or ``"none"``.
        act: activation name.
        dropout: dropout before the classifier.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        norm: str = "batchnorm",
        act: str = "relu",
        dropout: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        self.features = conv_stages(in_channels, channels, blocks_per_stage, dims=2, norm=norm, act=act)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.num_features = channels[-1]
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, H, W) -> (B, channels[-1], H / 2^(stages-1), W / 2^(stages-1))
        return self.pool(x)  # (B, channels[-1])


@register_model(SimpleCNN, input_size=(1, 28, 28), num_params=421_642, source="LeNet-style conv-pool net")
def cnn_simple() -> dict[str, Any]:
    """Two conv-pool stages (32, 64) and a 128-unit FC layer, for 1x28x28 images."""
    return dict(in_channels=1, img_size=28, channels=(32, 64), hidden_dim=128)


@register_model(
    SimpleCNN, input_size=(1, 28, 28), num_params=421_738, source="LeNet-style conv-pool net with BatchNorm (mnist_cnn)"
)
def cnn_simple_bn() -> dict[str, Any]:
    """:func:`cnn_simple` with BatchNorm after each convolution: the ``mnist_cnn`` recipe's model."""
    return dict(in_channels=1, img_size=28, channels=(32, 64), hidden_dim=128, norm="batchnorm")


@register_model(
    CNN, input_size=(1, 28, 28), num_params=94_186, source="conv-BN-ReLU stages with global average pooling"
)
def cnn_bn() -> dict[str, Any]:
    """Three conv-BN-ReLU stages (32, 64, 128), one block each, for 1x28x28 images."""
    return dict(in_channels=1, img_size=28, channels=(32, 64, 128), blocks_per_stage=1)


@register_model(
    CNN, input_size=(3, 32, 32), num_params=1_148_874, source="conv-BN-ReLU stages with global average pooling"
)
def cnn_bn_cifar() -> dict[str, Any]:
    """Three stages (64, 128, 256) of two conv-BN-ReLU blocks each, for 3x32x32 images."""
    return dict(in_channels=3, img_size=32, channels=(64, 128, 256), blocks_per_stage=2, dropout=0.1)


@register_model(CNN, input_size=(1, 8, 8), num_params=65_834, source="small conv-BN net for the embedded 8x8 digits")
def cnn_digits() -> dict[str, Any]:
    """Two conv-BN-ReLU stages (32, 64) for 1x8x8 images (scikit-learn digits)."""
    return dict(in_channels=1, img_size=8, channels=(32, 64), blocks_per_stage=2)
