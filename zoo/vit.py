"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words").

A strided conv cuts the image into patches and embeds them, a learned class token is prepended, a learned position
embedding is added, pre-norm transformer blocks (attention through ``F.scaled_dot_product_attention``, GELU MLP,
stochastic depth growing linearly over the blocks) follow, and the normalized class token feeds the classifier.

Checked against ``timm.models.vision_transformer`` (timm 1.0): the ``*_patch16_224`` presets have timm's
parameter counts, the module names are timm's, and :func:`from_timm` loads a timm state dict so that outputs agree
within 1e-4 (tests/test_vision_models.py). Only timm's original ViT is covered (no register tokens, LayerScale,
average pooling or qk-norm): :func:`from_timm` refuses checkpoints that use them.

Other image sizes: the position embedding belongs to the grid of ``img_size``. An input with another size (each side
a multiple of ``patch_size``) is accepted, and the embedding is resampled *at forward time*, bicubic with
antialiasing like timm's ``resample_abs_pos_embed``, leaving the class token's entry as it is; at the built size it is
used as it is. The stored parameter never changes, so a checkpoint keeps loading into the model it came from; to
fine-tune at a new size for good, build the model with the new ``img_size`` and load
``resample_pos_embed(state["pos_embed"], new_grid, old_grid)``.

``grad_checkpointing=True`` recomputes each block's activations in the backward pass instead of keeping them
(training only; see :mod:`zoo.layers.checkpointing`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, resample_abs_pos_embed
from torch import nn

from zoo.layers import get_act_layer
from zoo.layers.checkpointing import checkpoint_module, use_checkpointing
from zoo.registry import register_model
from zoo.tasks import ImageClassifier


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resample a ``(1, prefix + H * W, D)`` position embedding to a ``new_grid`` of patches.

    timm's bicubic, antialiased ``resample_abs_pos_embed``; the class token's entry is kept, and ``pos_embed`` itself
    comes back when the grids are equal (no copy on the usual forward).
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, list(new_grid), list(old_grid), num_prefix_tokens=num_prefix_tokens)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches, each linearly embedded: ``(B, C, H, W) -> (B, H/p * W/p, D)``."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)  # (B, N, 3, heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(batch, tokens, dim)  # (B, heads, N, head_dim) -> (B, N, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))`` then dropout, with hidden width ``mlp_ratio * dim``."""

    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu", drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = get_act_layer(act)()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``, each branch with drop-path."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act: str = "gelu",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act, drop)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class VisionTransformer(ImageClassifier):
    """ViT classifier on the class token.

    Args:
        num_classes: number of output classes.
        in_channels: image channels.
        img_size: the size the position embedding is built for; other sizes (multiples of ``patch_size``) work
            through resampling, see the module docstring.
        patch_size: side of the square patches.
        embed_dim: token width.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``embed_dim``.
        qkv_bias: bias in the qkv projection.
        drop_rate: dropout after the position embedding, in the MLPs and projections and before the classifier.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic-depth probability of the last block (linear from 0 at the first).
        act: activation of the MLPs.
        grad_checkpointing: recompute each block's activations in the backward pass instead of storing them (less
            memory, about one more forward of compute; training only).
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act: str = "gelu",
        grad_checkpointing: bool = False,
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        self.grad_checkpointing = grad_checkpointing
        height, width = self.img_size
        if height % patch_size or width % patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid_size = (height // patch_size, width // patch_size)
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * index / max(1, depth - 1) for index in range(depth)]
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rate, act) for rate in rates)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = embed_dim
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's default: N(0, 0.02) for the position embedding and linear weights. timm truncates at +-2, i.e. at
        # 100 standard deviations, which never happens; plain normal_ draws the same and is ~30x faster on CPU.
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters that weight decay would pull toward zero for no gain (timm's list for ViT)."""
        return {"pos_embed", "cls_token"}

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(
                f"{type(self).__name__} needs a height and width divisible by patch_size {self.patch_size}, "
                f"got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)  # (B, N, D) with N = grid[0] * grid[1]
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, D)
        x = self.pos_drop(x + resample_pos_embed(self.pos_embed, grid, self.grid_size))
        if use_checkpointing(self, self.grad_checkpointing):
            for block in self.blocks:
                x = checkpoint_module(block, x)
        else:
            x = self.blocks(x)
        x = self.norm(x)  # (B, 1 + N, D)
        return self.head_drop(x[:, 0])  # (B, D): the class token


#: Parts of timm's VisionTransformer that this implementation does not have.
_TIMM_UNSUPPORTED = ("reg_token", "dist_token", "head_dist", ".ls1.", ".ls2.", "fc_norm.", "attn_pool.", "_norm.")


def from_timm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a timm ``VisionTransformer`` state dict (class token, no extras) onto :class:`VisionTransformer`.

    The module names are timm's, so the keys map one to one; this refuses checkpoints of the variants above (register
    tokens, LayerScale, ``fc_norm``, attention pooling, qk-norm) instead of loading them half. Build the model with
    the checkpoint's ``img_size``, ``patch_size`` and widths.

    >>> import timm
    >>> import zoo
    >>> reference = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    >>> model = zoo.create_model("vit_tiny_patch16_224", depth=2)
    >>> model.load_state_dict(from_timm(reference.state_dict()))
    <All keys matched successfully>
    """
    for key in state_dict:
        if any(part in key for part in _TIMM_UNSUPPORTED) or key.startswith(("norm_pre.", "patch_embed.norm.")):
            raise ValueError(f"timm key {key!r} belongs to a ViT variant that zoo.vit does not implement")
    return dict(state_dict)


_TIMM = "timm.models.vision_transformer (Dosovitskiy et al., 2021)"


@register_model(VisionTransformer, input_size=(3, 224, 224), num_params=5_717_416, source=_TIMM, tags=("imagenet",))
def vit_tiny_patch16_224() -> dict[str, Any]:
    """ViT-Ti/16: width 192, 12 blocks, 3 heads, for 224x224 images, 1000 classes."""
    return dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)


@register_model(VisionTransformer, input_size=(3, 224, 224), num_params=22_050_664, source=_TIMM, tags=("imagenet",))
def vit_small_patch16_224() -> dict[str, Any]:
    """ViT-S/16: width 384, 12 blocks, 6 heads, for 224x224 images, 1000 classes."""
    return dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)


@register_model(VisionTransformer, input_size=(3, 224, 224), num_params=86_567_656, source=_TIMM, tags=("imagenet",))
def vit_base_patch16_224() -> dict[str, Any]:
    """ViT-B/16: width 768, 12 blocks, 12 heads, for 224x224 images, 1000 classes."""
    return dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)


@register_model(
    VisionTransformer,
    input_size=(3, 32, 32),
    num_params=5_362_762,
    source="ViT-Ti on 4x4 patches of 32x32 images",
    tags=("cifar",),
)
def vit_tiny_patch4_32() -> dict[str, Any]:
    """ViT-Ti/4: width 192, 12 blocks, 3 heads, drop-path 0.1, for 3x32x32 images (64 patches), 10 classes."""
    return dict(num_classes=10, img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, drop_path_rate=0.1)


@register_model(
    VisionTransformer,
    input_size=(3, 32, 32),
    num_params=21_342_346,
    source="ViT-S on 4x4 patches of 32x32 images",
    tags=("cifar",),
)
def vit_small_patch4_32() -> dict[str, Any]:
    """ViT-S/4: width 384, 12 blocks, 6 heads, drop-path 0.1, for 3x32x32 images (64 patches), 10 classes."""
    return dict(num_classes=10, img_size=32, patch_size=4, embed_dim=384, depth=12, num_heads=6, drop_path_rate=0.1)
