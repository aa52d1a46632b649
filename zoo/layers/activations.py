"""Activation modules and the factory that resolves them by name.

Swish and Mish are written out here (rather than using ``nn.SiLU``/``nn.Mish``) so that the formulas are
readable next to the models; tests check them against torch's fused versions.
"""

from __future__ import annotations

import difflib
import inspect

import torch
import torch.nn.functional as F
from torch import nn


class Swish(nn.Module):
    """Swish, ``x * sigmoid(beta * x)`` (Ramachandran et al., 2017); ``beta=1`` equals SiLU."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class LearnableSwish(nn.Module):
    """Swish with a trained slope, ``x * sigmoid(beta * x)``, ``beta`` a parameter starting at ``beta`` (Ramachandran
    et al., 2017, "Swish-beta"): ``beta -> 0`` gives ``x / 2``, large ``beta`` gives ReLU. Named ``"swish_beta"``.

    One ``beta`` per layer (a 0-dim parameter, so the task bases apply no weight decay to it).

    >>> act = LearnableSwish()
    >>> act(torch.tensor([0.0, 2.0])).sum().backward()
    >>> round(act.beta.grad.item(), 4)  # d/d beta = x^2 s (1 - s), s = sigmoid(beta x): 4 s (1 - s) at x=2
    0.42
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class Mish(nn.Module):
    """Mish, ``x * tanh(softplus(x))`` (Misra, 2019)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x))


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": Swish,
    "swish_beta": LearnableSwish,
    "mish": Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "identity": nn.Identity,
}


def get_act_layer(name: str | type[nn.Module]) -> type[nn.Module]:
    """Resolve an activation class from its name (``"relu"``, ``"gelu"``, ``"swish"``, ...) or pass a class through."""
    if isinstance(name, type):
        return name
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), ACTIVATIONS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"Unknown activation {name!r}.{hint} Choose from {sorted(ACTIVATIONS)}.") from None


def inplace_activation(name: str | type[nn.Module]) -> nn.Module:
    """An activation module, in place where its class allows it (``ReLU``, ``SiLU``, ...), for inputs that are
    fresh conv or norm outputs: inference saves one allocation per activation, as in torchvision and timm."""
    cls = get_act_layer(name)
    return cls(inplace=True) if "inplace" in inspect.signature(cls).parameters else cls()
