"""Two MLP variants: identity shortcuts around each hidden layer, and two input branches joined before the head.

- :class:`ResidualMLPRegressor`: ``Linear`` to ``width``, then ``depth`` blocks ``x + Dropout(Act(Norm(Linear(x))))``
  (the shortcut of He et al., 2016, on feature vectors), then a linear head. The shortcuts keep a deep stack
  trainable without careful initialization.
- :class:`ImageTabularRegressor`: one sample is an image and a few tabular values (a product photo and its price,
  a scan and the patient's age). A conv branch reads the image, an MLP branch the table; their features are
  concatenated and a head maps them to the targets.

Both are :class:`~zoo.tasks.Regressor` models over one feature vector ``(B, F)``. The two inputs of
:class:`ImageTabularRegressor` arrive concatenated, pixels first: every tool (predict, serve, export) and every
datamodule passes one tensor, and the regression datamodules' per-feature statistics standardize both parts.
:meth:`ImageTabularRegressor.join_inputs` builds that vector from an image batch and a table batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.layers import ConvNormAct, InitScheme, get_act_layer, get_norm_layer, init_weights
from zoo.mlp import MLPStack
from zoo.registry import InputSpec, register_model
from zoo.tasks import Regressor


class ResidualMLPBlock(nn.Module):
    """``x + Dropout(Act(Norm(Linear(x))))``: a hidden layer of ``width`` units with an identity shortcut.

    >>> ResidualMLPBlock(8)(torch.zeros(2, 8)).shape
    torch.Size([2, 8])
    """

    def __init__(self, width: int, norm: str = "layernorm", act: str = "silu", dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Linear(width, width), get_norm_layer(norm)(width), get_act_layer(act)(), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(x)


class ResidualMLPRegressor(Regressor):
    """MLP regressor with identity shortcuts: standardized features ``(B, F)`` -> standardized targets ``(B, T)``.

    Args:
        in_features: features per sample (from the data).
        out_features: targets per sample (from the data).
        width: units of every hidden layer.
        depth: residual blocks.
        norm: ``"layernorm"``, ``"batchnorm"`` or ``"none"`` in each block.
        act: activation name, see :data:`zoo.layers.ACTIVATIONS` (``"swish_beta"`` learns its slope).
        dropout: dropout probability in each block.
        init: weight initialization scheme.
        **task_args: the data's statistics, loss, optimizer and schedule, see :class:`~zoo.tasks.Regressor`.
    """

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        width: int = 64,
        depth: int = 4,
        norm: str = "layernorm",
        act: str = "silu",
        dropout: float = 0.0,
        init: InitScheme = "default",
        **task_args: Any,
    ) -> None:
        super().__init__(in_features=in_features, out_features=out_features, **task_args)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[ResidualMLPBlock(width, norm, act, dropout) for _ in range(depth)])
        self.head = nn.Linear(width, out_features)
        init_weights(self, init, nonlinearity=act)

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))  # (B, F) -> (B, width) -> (B, T)


class ImageTabularRegressor(Regressor):
    """Regressor of two inputs, an image ``(C, H, W)`` and ``in_features - C*H*W`` tabular values, in one vector.

    A sample's features are the image's pixels flattened (``image.flatten(1)``), then the tabular values:
    ``in_features = C*H*W + tabular features``. The conv branch (``ConvNormAct`` per entry of ``conv_channels``, the
    later ones with stride 2, then global average pooling) and the MLP branch (``tabular_dims``) each give a feature
    vector; the head (``head_dims``, then a linear layer) reads their concatenation.

    Args:
        in_features: features per sample, pixels and tabular values (from the data).
        out_features: targets per sample (from the data).
        image_shape: ``(C, H, W)`` of the image part.
        conv_channels: output channels of each conv layer of the image branch.
        tabular_dims: hidden widths of the tabular branch.
        head_dims: hidden widths of the head over the joined features.
        norm: ``"batchnorm"``, ``"layernorm"`` or ``"none"`` in every branch.
        act: activation name, see :data:`zoo.layers.ACTIVATIONS`.
        dropout: dropout probability after the MLP layers.
        init: weight initialization scheme.
        **task_args: the data's statistics, loss, optimizer and schedule, see :class:`~zoo.tasks.Regressor`.

    >>> model = ImageTabularRegressor(in_features=3 * 4 * 4 + 5, image_shape=(3, 4, 4)).eval()
    >>> model(model.join_inputs(torch.randn(2, 3, 4, 4), torch.randn(2, 5))).shape
    torch.Size([2, 1])
    """

    def __init__(
        self,
        in_features: int = 72,
        out_features: int = 1,
        image_shape: Sequence[int] = (1, 8, 8),
        conv_channels: Sequence[int] = (8, 16),
        tabular_dims: Sequence[int] = (32,),
        head_dims: Sequence[int] = (32,),
        norm: str = "batchnorm",
        act: str = "relu",
        dropout: float = 0.0,
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(in_features=in_features, out_features=out_features, **task_args)
        if len(image_shape) != 3 or not conv_channels:
            raise ValueError(f"need image_shape (C, H, W) and conv_channels, got {image_shape} and {conv_channels}")
        self.image_shape = tuple(image_shape)
        self.image_features = math.prod(self.image_shape)
        self.tabular_features = in_features - self.image_features
        if self.tabular_features < 1:
            raise ValueError(
                f"in_features={in_features} leaves no tabular feature after the {self.image_features} pixels of an "
                f"image of shape {self.image_shape}"
            )
        convs, channels = [], self.image_shape[0]
        for index, out in enumerate(conv_channels):
            convs.append(ConvNormAct(channels, out, stride=2 if index else 1, norm=norm, act=act))
            channels = out
        self.image_branch = nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, conv_channels[-1])
        self.tabular_branch = MLPStack(self.tabular_features, tabular_dims, norm, act, dropout)
        head = MLPStack(channels + self.tabular_branch.num_features, head_dims, norm, act, dropout)
        self.head = nn.Sequential(head, nn.Linear(head.num_features, out_features))
        init_weights(self, init, nonlinearity=act)

    def split_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image ``(B, C, H, W)`` and tabular ``(B, in_features - C*H*W)`` parts of features ``(B, F)``."""
        return x[:, : self.image_features].unflatten(1, self.image_shape), x[:, self.image_features :]

    def join_inputs(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """Features ``(B, F)`` from an image batch ``(B, C, H, W)`` and a table batch, in the order the model reads."""
        if image.shape[1:] != self.image_shape or tabular.ndim != 2 or tabular.shape[1] != self.tabular_features:
            raise ValueError(
                f"{type(self).__name__} expects images (B, {', '.join(map(str, self.image_shape))}) and tabular "
                f"features (B, {self.tabular_features}), got {tuple(image.shape)} and {tuple(tabular.shape)}"
            )
        return torch.cat([image.flatten(1), tabular], dim=1)

    def forward_scaled(self, x: torch.Tensor) -> torch.Tensor:
        image, tabular = self.split_inputs(x)
        joined = torch.cat(
            [self.image_branch(image), self.tabular_branch(tabular)], dim=1
        )  # (B, C' + tabular_dims[-1])
        return self.head(joined)  # (B, T)


@register_model(
    ResidualMLPRegressor,
    input_size=InputSpec((2,), kind="features"),
    num_params=17_413,
    source="identity shortcuts (He et al., 2016) around Linear-LayerNorm-Swish(learned beta) layers",
    task="regression",
)
def residual_mlp_regressor() -> dict[str, Any]:
    """Four residual blocks of 64 units with LayerNorm and a learned-slope Swish, from 2 features to 1 target."""
    return dict(in_features=2, out_features=1, width=64, depth=4, norm="layernorm", act="swish_beta")


@register_model(
    ImageTabularRegressor,
    input_size=InputSpec((1 * 8 * 8 + 8,), kind="features"),
    num_params=3_289,
    source="two-branch (image conv + tabular MLP) regressor, features concatenated before the head",
    task="regression",
)
def image_tabular_regressor() -> dict[str, Any]:
    """An 8x8 grey image (two conv layers, 8 and 16 channels) and 8 tabular values (32 units), a 32-unit head."""
    return dict(in_features=72, out_features=1, image_shape=(1, 8, 8), conv_channels=(8, 16), tabular_dims=(32,))
