"""Custom autograd functions: the pattern behind every op PyTorch differentiates, written out for three classics.

A ``torch.autograd.Function`` has two static methods. ``forward(ctx, ...)`` computes the output and keeps what the
gradient needs (``ctx.save_for_backward`` for tensors, plain attributes for the rest); ``backward(ctx, grad_output)``
returns one gradient per input of ``forward`` (``None`` for inputs without one). Call it through ``Fn.apply``, as
the functional wrappers below do. Writing ``backward`` with differentiable tensor operations makes the function
twice differentiable for free (``torch.autograd.gradgradcheck`` passes), as for :class:`Square` and :class:`Sigmoid`.

Check a new function in float64 against finite differences, as ``tests/test_custom_layers.py`` does:

>>> x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
>>> torch.autograd.gradcheck(square, (x,)) and torch.autograd.gradgradcheck(square, (x,))
True
"""

from __future__ import annotations

from typing import Any

import torch


class Square(torch.autograd.Function):
    """``x ** 2``; the gradient ``2 x`` needs the input, so the input is saved."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * 2 * x


class Sigmoid(torch.autograd.Function):
    """``1 / (1 + exp(-x))``; the gradient ``y (1 - y)`` needs only the output, so the output is saved (the input
    can be freed)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(y)  # saving an output is allowed: autograd checks it is not modified in place later
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad_output * y * (1 - y)


class ReLU(torch.autograd.Function):
    """``max(x, 0)``; the gradient passes where the input was positive (0 at ``x = 0``, as in ``torch.relu``).

    Once differentiable only in the usual sense: the derivative jumps at 0, so check it away from the kink.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x > 0)  # a bool mask: 1 byte per element instead of the input's 4 or 8
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (positive,) = ctx.saved_tensors
        return grad_output * positive


def square(x: torch.Tensor) -> torch.Tensor:
    """``x ** 2`` through :class:`Square`."""
    return Square.apply(x)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The logistic function through :class:`Sigmoid`."""
    return Sigmoid.apply(x)


def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` through :class:`ReLU`."""
    return ReLU.apply(x)
