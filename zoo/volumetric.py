"""Volumetric classifier: stages of 3-d conv-norm-act blocks with global average pooling.

The 3-d counterpart of :class:`zoo.cnn.CNN` (the plain 3-d CNN baseline of e.g. MedMNIST v2, Yang et al., 2023,
without its residual connections), for volumes such as CT/MRI crops or short clips.

Input contract: volumes ``(B, C, D, H, W)``. The task base describes images by ``img_size`` (height, width); the
number of slices is a separate argument, ``volume_depth``, so that the saved hyperparameters rebuild the same model
and ``example_input_array`` is ``(2, C, D, H, W)``. Like :class:`~zoo.cnn.CNN`, any ``D, H, W`` works at forward
time (global pooling); the sizes given are nominal, for summaries and export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.layers import InitScheme, conv_stages, init_weights
from zoo.registry import register_model
from zoo.tasks import ImageClassifier


class CNN3D(ImageClassifier):
    """Stages of 3-d conv-norm-act blocks (stride 2 at the start of each later stage) and global average pooling.

    Args:
        num_classes: number of output classes.
        in_channels: channels of the volumes.
        img_size: nominal height and width of the volumes.
        volume_depth: nominal number of slices ``D``.
        channels: output channels of each stage.
        blocks_per_stage: conv-norm-act blocks in each stage.
        norm: ``"batchnorm"``, ``"groupnorm"``, ``"layernorm"`` or ``"none"``.
        act: activation name.
        dropout: dropout before the classifier.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    data_links = (*ImageClassifier.data_links, "volume_depth")
    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        volume_depth: int = 28,
        channels: tuple[int, ...] = (16, 32, 64),
        blocks_per_stage: int = 1,
        norm: str = "batchnorm",
        act: str = "relu",
        dropout: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if volume_depth < 1:
            raise ValueError(f"volume_depth must be positive, got {volume_depth}")
        self.volume_depth = volume_depth
        self.example_input_array = torch.zeros(2, in_channels, volume_depth, *self.img_size)
        self.features = conv_stages(in_channels, channels, blocks_per_stage, dims=3, norm=norm, act=act)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
        self.num_features = channels[-1]
        self.head = nn.Linear(self.num_features, num_classes)
        init_weights(self, init, nonlinearity=act)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects volumes of shape (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, D, H, W) -> (B, channels[-1], D/2^(s-1), H/2^(s-1), W/2^(s-1)) (rounded up)
        return self.pool(x)  # (B, channels[-1])


@register_model(
    CNN3D, input_size=(1, 28, 28, 28), num_params=70_426, source="3-d conv-BN-ReLU stages with global average pooling"
)
def volumetric_cnn_small() -> dict[str, Any]:
    """Three 3-d conv-BN-ReLU stages (16, 32, 64), one block each, for 1x28x28x28 volumes (MedMNIST 3-d size)."""
    return dict(in_channels=1, img_size=28, volume_depth=28, channels=(16, 32, 64), blocks_per_stage=1)
