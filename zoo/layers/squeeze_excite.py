"""Squeeze-and-excitation (Hu et al., 2018): reweight channels by a gate computed from their global average."""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.activations import get_act_layer


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(act(fc1(mean_hw(x)))))`` with 1x1 convs as the two fully connected layers.

    The layer names ``fc1``/``fc2`` follow torchvision's ``SqueezeExcitation`` so checkpoints map by name.

    Args:
        channels: channels of the input feature map.
        squeeze_channels: width of the bottleneck (EfficientNet uses a quarter of the *block input* channels).
        act: activation between the two layers.
    """

    def __init__(self, channels: int, squeeze_channels: int, act: str = "silu") -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = get_act_layer(act)()
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        scale = self.fc2(self.act(self.fc1(scale)))
        return x * scale.sigmoid()
