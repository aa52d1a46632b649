"""A small VGG-like net with a fixed patch-whitening first layer, built to train fast (the network of the CIFAR-10
speedrun recipe, ``recipes/cifar10_speedrun``).

The design follows the published CIFAR-10 speedruns (Page 2018, "How to train your ResNet"; Jordan 2024, "94% on
CIFAR-10 in 3.29 Seconds on a Single GPU"):

- **Whitening.** The first layer is a ``k x k`` convolution whose filters are the eigenvectors of the covariance of
  the training images' ``k x k`` patches, each scaled by ``1 / sqrt(eigenvalue + eps)``, and their negatives (so a
  following GELU passes both signs): ``2 * C * k * k`` channels. Its weights are fixed; its bias trains. They are
  computed from the first training batch the network sees (:meth:`PatchWhitening.fit`, summed over ranks under
  DDP), or explicitly with ``model.whitening.fit(images)``.
- **Blocks.** Three of conv 3x3, 2x2 max-pool, BatchNorm, GELU, conv 3x3, BatchNorm, GELU (pooling before the norm
  halves its cost). The convs have no bias; the BatchNorms learn only a shift (their scale stays 1), with momentum
  0.4 and eps 1e-12. Each conv's first ``in_channels`` filters start as the identity (``nn.init.dirac_``), an
  implicit residual path.
- **Head.** A global max-pool, a linear layer without bias, and the logits scaled by ``logit_scale`` (1/9).
- **Optimization.** The BatchNorm shifts train at ``bias_lr_scale`` (64) times the learning rate
  (:meth:`WhitenedVGG.optimizer_param_groups`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from zoo.registry import register_model
from zoo.tasks import ImageClassifier


class PatchWhitening(nn.Module):
    """A ``kernel_size`` convolution (no padding) that whitens image patches; its filters are fitted, not trained.

    Args:
        in_channels: image channels ``C``; the layer outputs ``2 * C * kernel_size ** 2`` channels.
        kernel_size: the patch side.
        eps: added to the eigenvalues before the inverse square root (limits the gain of flat directions).

    >>> layer = PatchWhitening(3, 2)
    >>> layer.fit(torch.randn(64, 3, 8, 8))
    >>> layer(torch.randn(1, 3, 8, 8)).shape
    torch.Size([1, 24, 7, 7])
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__()
        self.kernel_size, self.eps = kernel_size, eps
        self.out_channels = 2 * in_channels * kernel_size**2
        self.register_buffer("weight", torch.zeros(self.out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from the ``k x k`` patches of ``images`` ``(B, C, H, W)`` (normalized as the network's
        inputs are); under ``torch.distributed``, from the patches of every rank."""
        with torch.autocast(images.device.type, enabled=False):
            patches = images.float().unfold(2, self.kernel_size, 1).unfold(3, self.kernel_size, 1)  # B,C,H',W',k,k
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.weight[0].numel()).double()
            moments, count = patches.T @ patches, torch.tensor(float(len(patches)), device=patches.device).double()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(moments)
                dist.all_reduce(count)
            covariance = moments / count
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
            filters = (eigenvectors / (eigenvalues.clamp_min(0) + self.eps).sqrt()).T.flip(0)  # largest first
            filters = filters.reshape(-1, *self.weight.shape[1:])
            self.weight.copy_(torch.cat([filters, -filters]).to(self.weight.dtype))
            self.fitted.fill_(True)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen_fitted = False  # the loaded state decides again

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # `fitted` is read on the host once, not every step (on a GPU each read would be a sync)
        if self.training and not getattr(self, "_seen_fitted", False):
            if not bool(self.fitted):
                self.fit(x)
            self._seen_fitted = True
        return nn.functional.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():  # the first in_channels filters pass their input channel through: an implicit residual
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


def _norm(channels: int, momentum: float) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=momentum)
    norm.weight.requires_grad_(False)  # a learned shift only; the scale stays 1
    return norm


class ConvBlock(nn.Sequential):
    """conv 3x3, max-pool 2x2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU: halves the side."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = 0.4) -> None:
        super().__init__(
            _conv(in_channels, out_channels),
            nn.MaxPool2d(2),
            _norm(out_channels, bn_momentum),
            nn.GELU(),
            _conv(out_channels, out_channels),
            _norm(out_channels, bn_momentum),
            nn.GELU(),
        )


class WhitenedVGG(ImageClassifier):
    """Patch whitening, three conv blocks, global max-pool and a scaled linear head (see the module doc).

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (summaries, export); any side of at least ``kernel - 1 + 2 ** len(widths)``.
        widths: output channels of the three blocks.
        whitening_kernel: patch side of the whitening layer.
        logit_scale: factor on the logits (a temperature fixed in advance).
        bn_momentum: BatchNorm running-statistics momentum (PyTorch's convention: the weight of the new batch).
        bias_lr_scale: the BatchNorm shifts' learning rate over ``lr``.
        **task_args: loss, optimizer, schedule and TTA, see :class:`~zoo.tasks.ImageClassifier`.

    >>> model = WhitenedVGG(widths=(8, 16, 16))
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        widths: tuple[int, ...] = (64, 256, 256),
        whitening_kernel: int = 2,
        logit_scale: float = 1 / 9,
        bn_momentum: float = 0.4,
        bias_lr_scale: float = 64.0,
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if len(widths) < 1 or min(widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {widths}")
        if not (logit_scale > 0 and bias_lr_scale > 0 and math.isfinite(logit_scale * bias_lr_scale)):
            raise ValueError(f"logit_scale and bias_lr_scale must be positive, got {logit_scale}, {bias_lr_scale}")
        self.min_side = whitening_kernel - 1 + 2 ** len(widths)
        if min(self.img_size) < self.min_side:
            raise ValueError(f"img_size {self.img_size} is too small for this net (sides >= {self.min_side})")
        self.whitening = PatchWhitening(in_channels, whitening_kernel)
        blocks, prev = [], self.whitening.out_channels
        for width in widths:
            blocks.append(ConvBlock(prev, width, bn_momentum))
            prev = width
        self.features = nn.Sequential(nn.GELU(), *blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.num_features = prev
        self.head = nn.Linear(prev, num_classes, bias=False)
        self.logit_scale = logit_scale

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(
                f"{type(self).__name__} needs a height and width of at least {self.min_side}, got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.whitening(x))  # (B, widths[-1])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features) * self.logit_scale

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The task base's groups, with the BatchNorm shifts apart at ``lr * bias_lr_scale`` (no weight decay)."""
        norm_shifts = {
            id(module.bias)
            for module in self.modules()
            if isinstance(module, nn.BatchNorm2d) and module.bias is not None and module.bias.requires_grad
        }
        groups = []
        for group in super().optimizer_param_groups():
            kept = [param for param in group["params"] if id(param) not in norm_shifts]
            if kept:
                groups.append({**group, "params": kept})
        shifts = [param for param in self.parameters() if id(param) in norm_shifts]
        if shifts:
            groups.append({"params": shifts, "lr": self.hparams.lr * self.hparams.bias_lr_scale, "weight_decay": 0.0})
        return groups


_SPEEDRUN = "Jordan 2024, '94% on CIFAR-10 in 3.29 Seconds on a Single GPU' (airbench94's network)"


@register_model(WhitenedVGG, input_size=(3, 32, 32), num_params=1_972_504, source=_SPEEDRUN, tags=("cifar",))
def whitened_vgg_cifar() -> dict[str, Any]:
    """2x2 patch whitening (24 channels), blocks of 64, 256 and 256 channels, 3x32x32 images, 10 classes."""
    return dict(num_classes=10, img_size=32, widths=(64, 256, 256))
