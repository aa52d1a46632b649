"""Multilayer perceptrons: an image classifier on flattened pixels and a regressor on feature vectors.

The classic baseline: ``[Linear -> norm -> act -> dropout] x depth -> Linear`` (:class:`MLPStack` and a head). With
one hidden layer of 128 units on MNIST it is the 784-128-10 network used by ``benchmarks/loop_overhead.py``; with
three layers of 128 SiLU units it fits the textbook's 2-D test function (``recipes/function_mlp.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.layers import InitScheme, get_act_layer, get_norm_layer, init_weights
from zoo.registry import InputSpec, register_model
from zoo.tasks import ImageClassifier, Regressor


class MLPStack(nn.Sequential):
    """The hidden layers, ``[Linear -> norm -> act -> dropout]`` per width of ``hidden_dims``.

    Args:
        in_features: input width.
        hidden_dims: width of each hidden layer (its length is the depth).
        norm: ``"batchnorm"``, ``"layernorm"`` or ``"none"`` after each linear layer.
        act: activation name, see :data:`zoo.layers.ACTIVATIONS`.
        dropout: dropout probability after each hidden layer.

    >>> MLPStack(4, (8, 6)).num_features
    6
    """

    def __init__(
        self, in_features: int, hidden_dims: Sequence[int], norm: str = "none", act: str = "relu", dropout: float = 0.0
    ) -> None:
        act_layer, norm_layer = get_act_layer(act), get_norm_layer(norm)
        layers: list[nn.Module] = []
        width = in_features
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), norm_layer(hidden), act_layer(), nn.Dropout(dropout)]
            width = hidden
        super().__init__(*layers)
        self.num_features = width


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
        stack = MLPStack(in_channels * self.img_size[0] * self.img_size[1], hidden_dims, norm, act, dropout)
        self.features = nn.Sequential(nn.Flatten(), *stack)
        self.num_features = stack.num_features
        self.head = nn.Linear(stack.num_features, num_classes)
        init_weights(self, init, nonlinearity=act)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, hidden_dims[-1])


class MLPRegressor(Regressor):
    """Fully connected regressor: standardized features ``(B, F)`` -> standardized targets ``(B, T)``.

    Args:
        in_features: features per sample (from the data).
        out_features: targets per sample (from the data).
        hidden_dims: width of each hidden layer (its length is the depth).
        norm: ``"batchnorm"``, ``"layernorm"`` or ``"none"`` after each hidden linear layer.
        act: activation name, see :data:`zoo.layers.ACTIVATIONS`; a smooth one (``"silu"``, ``"tanh"``) for smooth
            functions.
        dropout: dropout probability after each hidden layer.
        init: weight initialization scheme.
        **task_args: the data's statistics, loss, optimizer and schedule, see :class:`~zoo.tasks.Regressor`.
    """

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        hidden_dims: Sequence[int] = (128, 128, 128),
        norm: str = "none",
        act: str = "silu",
        dropout: float = 0.0,
        init: InitScheme = "default",
        **task_args: Any,
    ) -> None:
        super().__init__(in_features=in_features, out_features=out_features, **task_args)
        self.features = MLPStack(in_features, hidden_dims, norm, act, dropout)
        self.head = nn.Linear(self.features.num_features, out_features)
        init_weights(self, init, nonlinearity=act)

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, F) -> (B, T)


@register_model(MLP, input_size=(1, 28, 28), num_params=101_770, source="784-128-10 baseline")
def mlp_small() -> dict[str, Any]:
    """One hidden layer of 128 ReLU units (the loop-overhead benchmark model)."""
    return dict(hidden_dims=(128,))


@register_model(MLP, input_size=(1, 28, 28), num_params=569_226, source="deeper MLP with BatchNorm and dropout")
def mlp_base() -> dict[str, Any]:
    """Three hidden layers (512, 256, 128) with BatchNorm, GELU and dropout 0.1."""
    return dict(hidden_dims=(512, 256, 128), norm="batchnorm", act="gelu", dropout=0.1)


@register_model(
    MLPRegressor,
    input_size=InputSpec((2,), kind="features"),
    num_params=33_537,
    source="MLP regressor for the 2-D test function sin 5x cos 5y + 0.5 sin 10x + 0.3 cos 10y",
    task="regression",
)
def mlp_regressor() -> dict[str, Any]:
    """Three hidden layers of 128 SiLU units, from 2 features to 1 target."""
    return dict(in_features=2, out_features=1, hidden_dims=(128, 128, 128), act="silu")
