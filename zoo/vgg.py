"""VGG (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition").

Stages of 3x3 convolutions (padding 1, each followed by ReLU), each stage closed by a 2x2 max-pool; then an adaptive
average pool, fully connected hidden layers with dropout, and a linear classifier.

- The textbook VGG-style net for 32x32 images (``vgg_style_cifar``): stages 64x2, 128x2, 256x3, 512x3, global
  average pooling, one 512-unit hidden layer and dropout 0.5: 7,903,050 parameters for 10 classes (convs with bias).
  ``batch_norm=True`` puts a BatchNorm after each conv; ``vgg_style_bn_cifar`` also drops the conv biases, which a
  norm cancels: 7,905,738 parameters (7,908,426 with the biases kept).
- torchvision's layout (``vgg11``, ``vgg16``, ``vgg11_bn``, ``vgg16_bn``): five stages, a 7x7 adaptive average pool,
  two 4096-unit hidden layers with dropout 0.5. Checked against ``torchvision.models.vgg`` (v0.29): equal parameter
  counts (138,357,544 for VGG-16), and :func:`from_torchvision` maps its state dict so outputs agree to float
  precision (tests/test_vgg.py). torchvision keeps the conv biases under BatchNorm; so do these presets.

The feature layers are one flat ``nn.Sequential`` with torchvision's indices (conv, [norm,] ReLU, ..., max-pool), as in
timm's VGG, so torchvision's ``features.*`` keys load unchanged. What differs from torchvision: weights use
:func:`~zoo.layers.init_weights` (Kaiming normal over fan-in, zero biases; torchvision: fan-out for convs and
N(0, 0.01) for linear layers).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.layers import InitScheme, init_weights, inplace_activation
from zoo.registry import register_model
from zoo.tasks import ImageClassifier


class VGGStyleNet(ImageClassifier):
    """VGG: stages of 3x3 convs, each ending in a 2x2 max-pool; adaptive average pooling; an MLP head.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (for summaries and export); any size with sides of at least ``2 ** stages``.
        layers: number of 3x3 convs in each stage.
        widths: output channels of each stage.
        batch_norm: a BatchNorm after each conv.
        conv_bias: bias in the convs (redundant before a BatchNorm, but torchvision keeps it).
        pool_size: side of the adaptive average pool's output grid (1: global pooling; torchvision: 7).
        hidden_dims: widths of the hidden fully connected layers, each followed by ReLU and dropout.
        dropout: dropout after each hidden layer.
        act: activation name.
        init: weight initialization scheme.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.

    >>> model = VGGStyleNet(layers=(1, 1), widths=(8, 16), hidden_dims=(32,))
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    fixed_input_size = False
    overfit_lr = 2e-4  # without BatchNorm, 13 plain layers diverge in the first Adam steps at 1e-3

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        layers: tuple[int, ...] = (2, 2, 3, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        batch_norm: bool = False,
        conv_bias: bool = True,
        pool_size: int = 1,
        hidden_dims: tuple[int, ...] = (512,),
        dropout: float = 0.5,
        act: str = "relu",
        init: InitScheme = "kaiming",
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if len(layers) != len(widths) or min(layers, default=0) < 1:
            raise ValueError(f"layers {layers} and widths {widths} need equal lengths and at least one conv each")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.min_side = 2 ** len(layers)
        if min(self.img_size) < self.min_side:
            raise ValueError(f"img_size {self.img_size} is too small for {len(layers)} max-pools (>= {self.min_side})")
        features: list[nn.Module] = []
        prev = in_channels
        for depth, width in zip(layers, widths, strict=True):
            for _ in range(depth):
                features.append(nn.Conv2d(prev, width, 3, padding=1, bias=conv_bias))
                if batch_norm:
                    features.append(nn.BatchNorm2d(width))
                features.append(inplace_activation(act))
                prev = width
            features.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*features)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_size), nn.Flatten())
        prev *= pool_size * pool_size
        hidden: list[nn.Module] = []
        for dim in hidden_dims:
            hidden += [nn.Linear(prev, dim), inplace_activation(act), nn.Dropout(dropout)]
            prev = dim
        self.pre_logits = nn.Sequential(*hidden)
        self.num_features = prev
        self.head = nn.Linear(prev, num_classes)
        init_weights(self, init, nonlinearity=act)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[-2:]) < self.min_side:
            raise ValueError(
                f"{type(self).__name__} needs a height and width of at least {self.min_side} (one 2x2 max-pool per "
                f"stage), got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, widths[-1], H / 2^stages, W / 2^stages)
        x = self.pool(x)  # (B, widths[-1] * pool_size^2)
        return self.pre_logits(x)  # (B, num_features): the last hidden width


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a ``torchvision.models.vgg*`` state dict to :class:`VGGStyleNet`'s layout.

    ``features.*`` keys are the same; the classifier's last linear layer becomes ``head``, the others
    ``pre_logits``. Build the model with the same configuration (a ``vgg*`` preset) and the checkpoint's
    ``num_classes``.

    >>> import torchvision
    >>> import zoo
    >>> with torch.device("meta"):
    ...     model = zoo.create_model("vgg11")
    ...     state = from_torchvision(torchvision.models.vgg11(weights=None).state_dict())
    >>> model.load_state_dict(state, assign=True)
    <All keys matched successfully>
    """
    indices = [int(key.split(".")[1]) for key in state_dict if key.startswith("classifier.")]
    if not indices:
        raise ValueError("not a torchvision VGG state dict: it has no 'classifier.*' keys")
    last = max(indices)
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            _, index, name = key.split(".", 2)
            key = f"head.{name}" if int(index) == last else f"pre_logits.{index}.{name}"
        converted[key] = value
    return converted


_TEXTBOOK = "VGG-style net: stages of 3x3 convs, global average pooling, a 512-unit head (Simonyan & Zisserman, 2015)"
_TV = "torchvision.models.vgg (Simonyan & Zisserman, 2015)"
_TV_LAYOUT = dict(
    num_classes=1000, img_size=224, widths=(64, 128, 256, 512, 512), pool_size=7, hidden_dims=(4096, 4096)
)


@register_model(VGGStyleNet, input_size=(3, 32, 32), num_params=7_903_050, source=_TEXTBOOK, tags=("cifar",))
def vgg_style_cifar() -> dict[str, Any]:
    """3x3 convs 64x2, 128x2, 256x3, 512x3, global pooling, 512 hidden units, dropout 0.5; 3x32x32, 10 classes."""
    return dict(num_classes=10, img_size=32, layers=(2, 2, 3, 3), widths=(64, 128, 256, 512), hidden_dims=(512,))


@register_model(VGGStyleNet, input_size=(3, 32, 32), num_params=7_905_738, source=_TEXTBOOK, tags=("cifar",))
def vgg_style_bn_cifar() -> dict[str, Any]:
    """The VGG-style net with a BatchNorm after each conv (convs without bias), for 3x32x32 images, 10 classes."""
    return dict(
        num_classes=10,
        img_size=32,
        layers=(2, 2, 3, 3),
        widths=(64, 128, 256, 512),
        hidden_dims=(512,),
        batch_norm=True,
        conv_bias=False,
    )


@register_model(VGGStyleNet, input_size=(3, 224, 224), num_params=132_863_336, source=_TV, tags=("imagenet",))
def vgg11() -> dict[str, Any]:
    """VGG-11 (configuration A): convs (1, 1, 2, 2, 2), two 4096-unit layers, 224x224, 1000 classes."""
    return dict(_TV_LAYOUT, layers=(1, 1, 2, 2, 2))


@register_model(VGGStyleNet, input_size=(3, 224, 224), num_params=132_868_840, source=_TV, tags=("imagenet",))
def vgg11_bn() -> dict[str, Any]:
    """VGG-11 with a BatchNorm after each conv, 224x224, 1000 classes."""
    return dict(_TV_LAYOUT, layers=(1, 1, 2, 2, 2), batch_norm=True)


@register_model(VGGStyleNet, input_size=(3, 224, 224), num_params=138_357_544, source=_TV, tags=("imagenet",))
def vgg16() -> dict[str, Any]:
    """VGG-16 (configuration D): convs (2, 2, 3, 3, 3), two 4096-unit layers, 224x224, 1000 classes."""
    return dict(_TV_LAYOUT, layers=(2, 2, 3, 3, 3))


@register_model(VGGStyleNet, input_size=(3, 224, 224), num_params=138_365_992, source=_TV, tags=("imagenet",))
def vgg16_bn() -> dict[str, Any]:
    """VGG-16 with a BatchNorm after each conv, 224x224, 1000 classes."""
    return dict(_TV_LAYOUT, layers=(2, 2, 3, 3, 3), batch_norm=True)
