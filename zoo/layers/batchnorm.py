"""Batch normalization written out (Ioffe and Szegedy, 2015), equal to ``nn.BatchNorm2d`` in every mode.

Gradients come from autograd through the forward's tensor operations. The state dict has ``nn.BatchNorm2d``'s keys
(``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), so weights load either way;
``tests/test_custom_layers.py`` checks outputs, running statistics and gradients against it.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchNorm2dScratch(nn.Module):
    """``nn.BatchNorm2d`` from tensor operations: ``(x - mean) / sqrt(var + eps) * weight + bias`` per channel.

    In training the mean and variance are the batch's, over ``(B, H, W)``: the biased variance normalizes, the
    unbiased one (``n / (n - 1)`` times it) enters the running variance, as in PyTorch. The running statistics move
    by ``momentum`` (``running = (1 - momentum) * running + momentum * batch``), or as a cumulative average of all
    batches when ``momentum=None``. In evaluation the running statistics normalize.

    Args:
        num_features: channels ``C`` of ``(B, C, H, W)`` inputs.
        eps: added to the variance before the square root.
        momentum: weight of each new batch in the running statistics; ``None`` for a cumulative average.
        affine: learn a per-channel ``weight`` (1) and ``bias`` (0).
        track_running_stats: keep running statistics; without them evaluation uses the batch's too.

    >>> scratch, reference = BatchNorm2dScratch(3), nn.BatchNorm2d(3)
    >>> x = torch.randn(4, 3, 5, 5)
    >>> torch.allclose(scratch(x), reference(x), atol=1e-6)
    True
    >>> _ = reference.load_state_dict(scratch.state_dict())  # the same keys: loads with strict=True
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch seen."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (B, {self.num_features}, H, W), got {tuple(x.shape)}"
            )
        if self.training or not self.track_running_stats:
            mean = x.mean(dim=(0, 2, 3))  # (C,)
            var = x.var(dim=(0, 2, 3), unbiased=False)  # (C,): biased, for normalizing
            if self.training and self.track_running_stats:
                self._update_running_stats(mean.detach(), var.detach(), x.numel() // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - _channels(mean)) * _channels(torch.rsqrt(var + self.eps))
        return x_hat * _channels(self.weight) + _channels(self.bias) if self.affine else x_hat

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        if n < 2:
            raise ValueError(f"BatchNorm2dScratch needs more than 1 value per channel in training, got {n}")
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_((var * n / (n - 1)).to(self.running_var.dtype), factor)  # unbiased

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


def _channels(values: torch.Tensor) -> torch.Tensor:
    return values.view(1, -1, 1, 1)  # (C,) -> (1, C, 1, 1), to broadcast over batch and space
