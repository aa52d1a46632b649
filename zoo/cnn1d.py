"""1-d convolutional classifier that reads an image as a sequence of rows (the sequential-MNIST setting).

:class:`SequenceCNN` turns ``(B, C, H, W)`` into ``(B, C * W, H)``: ``H`` time steps of ``C * W`` features. A
:class:`~zoo.layers.Conv1dStack` runs over time, then global average and max pooling over time feed a linear head.
Only convolutions along the rows see neighbouring rows, so it measures what a sequence model gets from
one-dimensional context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.layers import Conv1dStack, InitScheme, init_weights
from zoo.registry import register_model
from zoo.tasks import ImageClassifier


class SequenceCNN(ImageClassifier):
    """Conv1d stack over image rows, average+max pooling over time, linear head.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: image height (the sequence length, any value works) and width (``C * W`` features, fixed).
        channels: output channels of each conv1d layer.
        kernel_size: temporal kernel size (odd).
        strides: temporal stride of each layer (an int for all).
        norm: ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"`` or ``"none"``.
        act: activation name.
        dropout: dropout before the classifier.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.

    >>> model = SequenceCNN(num_classes=10, in_channels=1, img_size=28)
    >>> model(torch.zeros(2, 1, 28, 28)).shape, model.num_features
    (torch.Size([2, 10]), 256)
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        channels: Sequence[int] = (64, 128, 128),
        kernel_size: int = 5,
        strides: int | Sequence[int] = (1, 2, 2),
        norm: str = "batchnorm",
        act: str = "relu",
        dropout: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        features_per_step = in_channels * self.img_size[1]
        self.conv = Conv1dStack(features_per_step, tuple(channels), kernel_size, strides, norm=norm, act=act)
        self.dropout = nn.Dropout(dropout)
        self.num_features = 2 * channels[-1]  # average and max over time
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, init, nonlinearity=act)

    def check_input(self, x: torch.Tensor) -> None:
        channels, width = self.in_channels, self.img_size[1]
        if x.ndim != 4 or x.shape[1] != channels or x.shape[3] != width:
            expected = f"(B, {channels}, H, {width})"
            raise ValueError(f"{type(self).__name__} expects input of shape {expected}, got {tuple(x.shape)}")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.permute(0, 1, 3, 2).flatten(1, 2)  # (B, C, H, W) -> (B, C * W, H): rows are time steps
        h = self.conv(sequence)  # (B, channels[-1], T)
        return self.dropout(torch.cat([h.mean(-1), h.amax(-1)], dim=1))  # (B, 2 * channels[-1])


@register_model(
    SequenceCNN, input_size=(1, 28, 28), num_params=135_050, source="1-d CNN over the rows of sequential MNIST"
)
def seqcnn_mnist() -> dict[str, Any]:
    """Three conv1d layers (64, 128, 128; kernel 5; strides 1, 2, 2) over the 28 rows of a 28x28 image."""
    return dict(in_channels=1, img_size=28, channels=(64, 128, 128), kernel_size=5, strides=(1, 2, 2))
