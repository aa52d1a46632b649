"""Weight initialization schemes applied to every Linear/Conv layer of a module."""

from __future__ import annotations

from typing import Literal

from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
InitScheme = Literal["default", "kaiming", "xavier", "orthogonal"]


def init_weights(module: nn.Module, scheme: InitScheme = "kaiming", nonlinearity: str = "relu") -> None:
    """Initialize the weights of all Linear/Conv layers in ``module`` in place; biases become zero.

    ``"default"`` keeps PyTorch's own initialization. Norm layers are reset to weight 1, bias 0.
    """
    if scheme == "default":
        return
    gain_nonlinearity = nonlinearity if nonlinearity in ("relu", "leaky_relu", "tanh", "sigmoid") else "relu"
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity=gain_nonlinearity)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight, gain=nn.init.calculate_gain(gain_nonlinearity))
            elif scheme == "orthogonal":
                nn.init.orthogonal_(layer.weight, gain=nn.init.calculate_gain(gain_nonlinearity))
            else:
                raise ValueError(f"Unknown init scheme {scheme!r}; choose from default, kaiming, xavier, orthogonal.")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS) and layer.weight is not None:
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
