"""ResNet (He et al., 2016, "Deep Residual Learning") and pre-activation ResNet (He et al., 2016, "Identity Mappings").

Checked against ``torchvision.models.resnet`` (v0.29): with the ImageNet stem and 1000 classes the parameter
counts are torchvision's, and :func:`from_torchvision` maps its state dict so outputs agree to float precision
(tests/test_vision_models.py). Like torchvision (ResNet v1.5), the bottleneck strides in its 3x3 conv.

What differs from torchvision:
- ``stem="cifar"`` replaces the 7x7/2 conv and max-pool by one 3x3/1 conv for 32x32 images, as in the CIFAR
  ResNet-18 commonly used as a baseline (kuangliu/pytorch-cifar: 11,173,962 parameters for 10 classes).
- ``block="preact_basic"``/``"preact_bottleneck"`` give pre-activation blocks (norm -> act -> conv); their stem is a
  bare conv (plus max-pool for ImageNet) and a final norm -> act follows the last stage, as in timm's ResNetV2.
  A projection shortcut then takes the pre-activated input, as in the paper's code. The counts are torchvision's
  minus the stem norm plus the final norm (kuangliu/pytorch-cifar's PreActResNet-18 omits the final norm-act: 1,024
  parameters fewer than ours).
- ``zero_init_residual`` zeroes the last norm of each block (Goyal et al., 2017). A pre-activation block has no
  norm after its last conv, so there the last conv is zeroed instead (timm's ResNetV2 does the same).
- Weights use :func:`~zoo.layers.init_weights` (Kaiming normal over fan-in; torchvision uses fan-out, which differs
  only for convs whose input and output widths differ).
- ``residual=False`` removes every shortcut: the "plain" network of the same depth that the paper compares against
  (its Sec. 4.1-4.2; ``plain20_cifar``/``plain56_cifar`` beside ``resnet20_cifar``/``resnet56_cifar``,
  ``benchmarks/degradation.py``). The CIFAR ResNets here use projection shortcuts (the paper's option B) where the
  width changes, where the paper's CIFAR nets pad with zeros (option A): ResNet-20 has 272,474 parameters here,
  2,752 more than option A's 269,722 (which is also the plain net's count).
- ``grad_checkpointing=True`` recomputes each block's activations in the backward pass instead of keeping them
  (training only; see :mod:`zoo.layers.checkpointing`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from zoo.layers import InitScheme, get_act_layer, get_norm_layer, init_weights, inplace_activation
from zoo.layers.checkpointing import checkpoint_module, use_checkpointing
from zoo.registry import register_model
from zoo.tasks import ImageClassifier

BlockName = Literal["basic", "bottleneck", "preact_basic", "preact_bottleneck"]
StemName = Literal["imagenet", "cifar"]
NormLayer = Callable[[int], nn.Module]


def _shortcut(in_channels: int, out_channels: int, stride: int, norm_layer: NormLayer | None) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection (followed by a norm in post-activation blocks)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))
    if norm_layer is not None:
        layers["norm"] = norm_layer(out_channels)
    return nn.Sequential(layers)


class BasicBlock(nn.Module):
    """``act(x + norm(conv3x3(act(norm(conv3x3(x))))))``; ``width`` is the output width (expansion 1)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        norm_layer: NormLayer,
        act_layer: type[nn.Module],
        residual: bool = True,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, padding=1, bias=False)
        self.norm1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = norm_layer(width)
        self.act = inplace_activation(act_layer)
        self.shortcut = _shortcut(in_channels, width, stride, norm_layer) if residual else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.shortcut is not None:
            out += self.shortcut(x)  # in place on the norm's fresh output
        return self.act(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand to ``4 * width``, each followed by a norm; act after the sum."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        norm_layer: NormLayer,
        act_layer: type[nn.Module],
        residual: bool = True,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm1 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.norm2 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.norm3 = norm_layer(out_channels)
        self.act = inplace_activation(act_layer)
        self.shortcut = _shortcut(in_channels, out_channels, stride, norm_layer) if residual else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.norm3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.shortcut is not None:
            out += self.shortcut(x)
        return self.act(out)


def _preact_shortcut(shortcut: nn.Module, x: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    # A projection sees the pre-activated input; an identity shortcut keeps the raw x (the clean path).
    return x if isinstance(shortcut, nn.Identity) else shortcut(pre)


class PreActBlock(nn.Module):
    """``x + conv3x3(act(norm(conv3x3(act(norm(x))))))``: each conv is preceded by its norm and activation."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        norm_layer: NormLayer,
        act_layer: type[nn.Module],
        residual: bool = True,
    ):
        super().__init__()
        self.norm1 = norm_layer(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, padding=1, bias=False)
        self.norm2 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.act = act_layer()  # not in place: with norm 'none' its input is the block's input
        self.shortcut = _shortcut(in_channels, width, stride, None) if residual else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        out = self.conv2(self.act(self.norm2(self.conv1(pre))))
        return out if self.shortcut is None else out + _preact_shortcut(self.shortcut, x, pre)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: (norm -> act -> conv) for the 1x1 reduce, the strided 3x3 and the 1x1 expand."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        norm_layer: NormLayer,
        act_layer: type[nn.Module],
        residual: bool = True,
    ):
        super().__init__()
        out_channels = width * self.expansion
        self.norm1 = norm_layer(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = norm_layer(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.norm3 = norm_layer(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.act = act_layer()  # not in place: with norm 'none' its input is the block's input
        self.shortcut = _shortcut(in_channels, out_channels, stride, None) if residual else None

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        out = self.conv1(pre)
        out = self.conv2(self.act(self.norm2(out)))
        out = self.conv3(self.act(self.norm3(out)))
        return out if self.shortcut is None else out + _preact_shortcut(self.shortcut, x, pre)


BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBlock,
    "preact_bottleneck": PreActBottleneck,
}


class ResNet(ImageClassifier):
    """Residual network: a stem, stages of residual blocks (each later stage starts with stride 2), global pooling.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: nominal input size (for summaries and export); any size works.
        block: ``"basic"``, ``"bottleneck"``, ``"preact_basic"`` or ``"preact_bottleneck"``.
        layers: number of blocks in each stage.
        widths: block width of each stage (a bottleneck outputs 4x its width).
        stem: ``"imagenet"`` (7x7/2 conv and 3x3/2 max-pool) or ``"cifar"`` (3x3/1 conv).
        stem_width: output channels of the stem conv.
        norm: norm name, see :func:`~zoo.layers.get_norm_layer`.
        act: activation name.
        zero_init_residual: start each residual branch at zero, so every block starts as the identity.
        drop_rate: dropout before the classifier.
        init: weight initialization scheme.
        residual: ``False`` removes the shortcuts (a plain network of the same depth and layers).
        grad_checkpointing: recompute each block's activations in the backward pass instead of storing them
            (less memory, about one more forward of compute; training only).
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        block: BlockName = "basic",
        layers: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        stem: StemName = "imagenet",
        stem_width: int = 64,
        norm: str = "batchnorm",
        act: str = "relu",
        zero_init_residual: bool = False,
        drop_rate: float = 0.0,
        init: InitScheme = "kaiming",
        residual: bool = True,
        grad_checkpointing: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if block not in BLOCKS or stem not in ("imagenet", "cifar"):
            raise ValueError(f"Unknown block {block!r} or stem {stem!r}; blocks: {sorted(BLOCKS)}")
        if zero_init_residual and not residual:
            raise ValueError("zero_init_residual needs residual=True: without shortcuts a zeroed block outputs zeros")
        self.grad_checkpointing = grad_checkpointing
        if len(layers) != len(widths) or min(layers, default=0) < 1:
            raise ValueError(f"layers {layers} and widths {widths} need equal lengths and at least one block each")
        block_cls, preact = BLOCKS[block], block.startswith("preact")
        norm_layer, act_layer = get_norm_layer(norm, dims=2), get_act_layer(act)

        kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
        stem_layers = OrderedDict(conv=nn.Conv2d(in_channels, stem_width, kernel, stride, kernel // 2, bias=False))
        if not preact:  # a pre-activation block normalizes its own input
            stem_layers.update(norm=norm_layer(stem_width), act=inplace_activation(act_layer))
        if stem == "imagenet":
            stem_layers["pool"] = nn.MaxPool2d(3, 2, padding=1)
        self.stem = nn.Sequential(stem_layers)

        stages: list[nn.Module] = []
        prev = stem_width
        for index, (depth, width) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for block_index in range(depth):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(block_cls(prev, width, stride, norm_layer, act_layer, residual))
                prev = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        # The sum of the last pre-activation block is not normalized yet.
        self.final = nn.Sequential(norm_layer(prev), act_layer()) if preact else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(drop_rate))
        self.num_features = prev
        self.head = nn.Linear(prev, num_classes)

        init_weights(self, init, nonlinearity=act)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, tuple(BLOCKS.values())):
                    module.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, stem_width, H/4, W/4) with the ImageNet stem, (B, stem_width, H, W) with the CIFAR one
        if use_checkpointing(self, self.grad_checkpointing):
            for stage in self.stages:
                for block in stage:
                    x = checkpoint_module(block, x)
        else:
            x = self.stages(x)
        x = self.final(x)  # (B, num_features, H/32, W/32) or (B, num_features, H/8, W/8) with 4 stages
        return self.pool(x)  # (B, num_features)


_TORCHVISION_KEYS: list[tuple[str, str | Callable[[re.Match[str]], str]]] = [
    (r"^conv1\.", "stem.conv."),
    (r"^bn1\.", "stem.norm."),
    (r"^layer(\d+)\.", lambda m: f"stages.{int(m[1]) - 1}."),
    (r"\.bn(\d)\.", r".norm\1."),
    (r"\.downsample\.0\.", ".shortcut.conv."),
    (r"\.downsample\.1\.", ".shortcut.norm."),
    (r"^fc\.", "head."),
]


def from_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a ``torchvision.models.resnet*`` state dict to this module's :class:`ResNet` layout.

    Build the model with the same depth, ``stem="imagenet"`` and the checkpoint's ``num_classes``.

    >>> import torchvision
    >>> import zoo
    >>> model = zoo.create_model("resnet18")
    >>> state = from_torchvision(torchvision.models.resnet18(weights=None).state_dict())
    >>> model.load_state_dict(state)
    <All keys matched successfully>
    """
    converted = {}
    for key, value in state_dict.items():
        for pattern, replacement in _TORCHVISION_KEYS:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


_TV = "torchvision.models.resnet (He et al., 2016)"
_PREACT = "pre-activation ResNet (He et al., 2016, Identity Mappings)"


@register_model(ResNet, input_size=(3, 224, 224), num_params=11_689_512, source=_TV, tags=("imagenet",))
def resnet18() -> dict[str, Any]:
    """ResNet-18: basic blocks (2, 2, 2, 2), ImageNet stem, 1000 classes."""
    return dict(block="basic", layers=(2, 2, 2, 2))


@register_model(ResNet, input_size=(3, 224, 224), num_params=21_797_672, source=_TV, tags=("imagenet",))
def resnet34() -> dict[str, Any]:
    """ResNet-34: basic blocks (3, 4, 6, 3), ImageNet stem, 1000 classes."""
    return dict(block="basic", layers=(3, 4, 6, 3))


@register_model(ResNet, input_size=(3, 224, 224), num_params=25_557_032, source=_TV, tags=("imagenet",))
def resnet50() -> dict[str, Any]:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), ImageNet stem, 1000 classes."""
    return dict(block="bottleneck", layers=(3, 4, 6, 3))


@register_model(ResNet, input_size=(3, 224, 224), num_params=44_549_160, source=_TV, tags=("imagenet",))
def resnet101() -> dict[str, Any]:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3), ImageNet stem, 1000 classes."""
    return dict(block="bottleneck", layers=(3, 4, 23, 3))


@register_model(ResNet, input_size=(3, 224, 224), num_params=11_687_720, source=_PREACT, tags=("imagenet",))
def preactresnet18() -> dict[str, Any]:
    """Pre-activation ResNet-18: pre-activation basic blocks (2, 2, 2, 2), ImageNet stem, 1000 classes."""
    return dict(block="preact_basic", layers=(2, 2, 2, 2))


@register_model(ResNet, input_size=(3, 224, 224), num_params=21_795_880, source=_PREACT, tags=("imagenet",))
def preactresnet34() -> dict[str, Any]:
    """Pre-activation ResNet-34: pre-activation basic blocks (3, 4, 6, 3), ImageNet stem, 1000 classes."""
    return dict(block="preact_basic", layers=(3, 4, 6, 3))


@register_model(
    ResNet,
    input_size=(3, 32, 32),
    num_params=11_173_962,
    source="CIFAR ResNet-18 (kuangliu/pytorch-cifar)",
    tags=("cifar",),
)
def resnet18_cifar() -> dict[str, Any]:
    """ResNet-18 with the 3x3/1 CIFAR stem for 3x32x32 images, 10 classes."""
    return dict(num_classes=10, img_size=32, block="basic", layers=(2, 2, 2, 2), stem="cifar")


@register_model(
    ResNet,
    input_size=(3, 32, 32),
    num_params=11_172_170,
    source=_PREACT,
    tags=("cifar",),
)
def preactresnet18_cifar() -> dict[str, Any]:
    """Pre-activation ResNet-18 with the 3x3/1 CIFAR stem for 3x32x32 images, 10 classes."""
    return dict(num_classes=10, img_size=32, block="preact_basic", layers=(2, 2, 2, 2), stem="cifar")


_CIFAR_RESNET = "CIFAR ResNet (He et al., 2016, Sec. 4.2), projection shortcuts"
_PLAIN = "plain CIFAR net (He et al., 2016, Sec. 4.2): the ResNet without shortcuts"


def _cifar_resnet(blocks: int, residual: bool) -> dict[str, Any]:
    """He et al.'s CIFAR network of ``6 * blocks + 2`` layers: a 16-wide 3x3 stem, three stages of ``blocks`` basic
    blocks (widths 16, 32, 64), global pooling and a linear head."""
    layers = (blocks, blocks, blocks)
    return dict(
        num_classes=10, img_size=32, layers=layers, widths=(16, 32, 64), stem="cifar", stem_width=16, residual=residual
    )


@register_model(ResNet, input_size=(3, 32, 32), num_params=272_474, source=_CIFAR_RESNET, tags=("cifar",))
def resnet20_cifar() -> dict[str, Any]:
    """ResNet-20 for 3x32x32 images: 3 stages of 3 basic blocks (16, 32, 64 wide), 10 classes."""
    return _cifar_resnet(3, residual=True)


@register_model(ResNet, input_size=(3, 32, 32), num_params=855_770, source=_CIFAR_RESNET, tags=("cifar",))
def resnet56_cifar() -> dict[str, Any]:
    """ResNet-56 for 3x32x32 images: 3 stages of 9 basic blocks (16, 32, 64 wide), 10 classes."""
    return _cifar_resnet(9, residual=True)


@register_model(ResNet, input_size=(3, 32, 32), num_params=269_722, source=_PLAIN, tags=("cifar",))
def plain20_cifar() -> dict[str, Any]:
    """Plain-20: ResNet-20's 19 convs and head without the shortcuts, for 3x32x32 images, 10 classes."""
    return _cifar_resnet(3, residual=False)


@register_model(ResNet, input_size=(3, 32, 32), num_params=853_018, source=_PLAIN, tags=("cifar",))
def plain56_cifar() -> dict[str, Any]:
    """Plain-56: ResNet-56's 55 convs and head without the shortcuts, for 3x32x32 images, 10 classes."""
    return _cifar_resnet(9, residual=False)
