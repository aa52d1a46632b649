"""Multilayer perceptron on flattened images.

The classic baseline: ``Flatten -> [Linear -> norm -> act -> dropout] x depth -> Linear``. With one hidden layer of
128 units on MNIST it is the 784-128-10 network used by ``benchmarks/loop_overhead.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo._registry import register_model
from zoo.layers import InitScheme, get_act_layer, get_norm_layer, init_weights
from zoo.tasks import ImageClassifier


class MLP(ImageClassifier):
    """Fully connected classifier on flattened images.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: image height and width; the input layer has ``in_channels * H * W`` units.
        hidden_dims: width of each hidden layer (its length is the depth).
        norm: ``"batchnorm"``, ``"layernorm"`` or ``"none"`` after each hidden linear layer.
        act: activation name, see :data:`zoo.layers.ACTIVATIONS`.
        dropout: dropout probability after each hidden layer.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        img_size: int | tuple[int, int] = 28,
        hidden_dims: Sequence[int] = (256, 128),
        norm: str = "none",
        act: str = "relu",
        dropout: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        act_layer, norm_layer = get_act_layer(act), get_norm_layer(norm)
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * self.img_size[0] * self.img_size[1]
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), norm_layer(hidden), act_layer(), nn.Dropout(dropout)]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, hidden_dims[-1])


def _create_mlp(**kwargs: Any) -> MLP:
    return MLP(**kwargs)


@register_model(input_size=(1, 28, 28), num_params=101_770, source="784-128-10 baseline")
def mlp_small(**overrides: Any) -> MLP:
    """One hidden layer of 128 ReLU units (the loop-overhead benchmark model)."""
    preset = dict(hidden_dims=(128,))
    return _create_mlp(**dict(preset, **overrides))


@register_model(input_size=(1, 28, 28), num_params=569_226, source="deeper MLP with BatchNorm and dropout")
def mlp_base(**overrides: Any) -> MLP:
    """Three hidden layers (512, 256, 128) with BatchNorm, GELU and dropout 0.1."""
    preset = dict(hidden_dims=(512, 256, 128), norm="batchnorm", act="gelu", dropout=0.1)
    return _create_mlp(**dict(preset, **overrides))
