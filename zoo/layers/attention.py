"""Attention from scratch: scaled dot-product and multi-head attention, position encodings and pre-norm blocks.

:func:`scaled_dot_product_attention` takes ``(B, H, T, D)`` queries, keys and values and a boolean mask that is True
where a query may attend (the convention of ``F.scaled_dot_product_attention``, which it calls unless the weights
are asked for). :class:`MultiHeadAttention` projects, splits heads, optionally rotates queries and keys (rotary
positions, Su et al., 2021) and keeps a :class:`KVCache` for incremental decoding. The blocks are pre-norm
(GPT-2, Xiong et al., 2020): ``x + attn(norm(x))`` then ``x + mlp(norm(x))``. Checked against
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` given the same weights (``tests/test_attention.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PositionName = Literal["sinusoidal", "learned", "rotary", "none"]


def causal_mask(queries: int, keys: int, device: torch.device | None = None) -> torch.Tensor:
    """``(queries, keys)`` bool mask, True where query ``i`` may see key ``j``: the queries are the last ``queries``
    positions of ``keys`` (with a KV cache the new queries follow the cached keys).

    >>> causal_mask(2, 3).int().tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    return torch.ones(queries, keys, dtype=torch.bool, device=device).tril(diagonal=keys - queries)


def padding_to_attention_mask(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, S)`` "may attend" mask from a ``(B, S)`` key padding mask (True at padded keys)."""
    return ~key_padding_mask[:, None, None, :]


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``softmax(q k^T / sqrt(D) + mask) v`` and, when ``need_weights``, the attention weights.

    Args:
        q: queries ``(B, H, T, D)``.
        k: keys ``(B, H, S, D)``.
        v: values ``(B, H, S, Dv)``.
        attn_mask: bool, broadcastable to ``(B, H, T, S)``, True where a query may attend.
        dropout_p: dropout on the weights (training only: pass 0 in eval).
        need_weights: compute the weights explicitly and return them ``(B, H, T, S)``; otherwise the fused
            ``F.scaled_dot_product_attention`` runs and ``None`` is returned for them.

    Returns:
        The output ``(B, H, T, Dv)`` and the weights or ``None``.
    """
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p), None
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


@dataclass
class KVCache:
    """Keys and values ``(B, H, S, D)`` of the positions seen so far, for one attention layer."""

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions."""
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new positions and return all keys and values."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


class RotaryEmbedding(nn.Module):
    """Rotary position embedding: rotates pairs of query/key features by position-dependent angles, so that
    ``q . k`` depends on the relative position only (RoFormer, Su et al., 2021; half-split pairing as in GPT-NeoX).

    Args:
        head_dim: features per head (even).
        base: the wavelength base.
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, T, D)`` whose first position is ``offset``."""
        positions = torch.arange(offset, offset + x.shape[2], device=x.device, dtype=self.inv_freq.dtype)
        angles = torch.outer(positions, self.inv_freq)  # (T, D/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine encoding of Vaswani et al. (2017) to ``(B, T, D)`` inputs.

    >>> SinusoidalPositionalEncoding(8, max_length=16)(torch.zeros(1, 4, 8)).shape
    torch.Size([1, 4, 8])
    """

    def __init__(self, dim: int, max_length: int = 1024) -> None:
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(max_length, dim)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div[: dim // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x + PE[offset : offset + T]``."""
        if offset + x.shape[1] > self.table.shape[0]:
            raise ValueError(f"positions up to {offset + x.shape[1]} exceed max_length={self.table.shape[0]}")
        return x + self.table[offset : offset + x.shape[1]].to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned embedding per position (GPT-2) to ``(B, T, D)`` inputs."""

    def __init__(self, dim: int, max_length: int = 1024) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_length, dim)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x + E[offset : offset + T]``."""
        if offset + x.shape[1] > self.embedding.num_embeddings:
            raise ValueError(f"positions up to {offset + x.shape[1]} exceed max_length={self.embedding.num_embeddings}")
        return x + self.embedding(torch.arange(offset, offset + x.shape[1], device=x.device))


def build_position_encoding(kind: PositionName, dim: int, max_length: int) -> nn.Module | None:
    """The additive encoding of ``kind`` (``None`` for rotary, applied inside attention, and for ``"none"``)."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(dim, max_length)
    if kind == "learned":
        return LearnedPositionalEncoding(dim, max_length)
    if kind in ("rotary", "none"):
        return None
    raise ValueError(f"Unknown position encoding {kind!r}; choose sinusoidal, learned, rotary or none.")


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate query/key/value projections, masks, rotary positions and a KV cache.

    Args:
        dim: model width (``num_heads * head_dim``).
        num_heads: attention heads.
        dropout: dropout on the attention weights.
        bias: biases in the projections.
        rotary: rotate queries and keys by their positions.

    >>> attn = MultiHeadAttention(16, num_heads=4)
    >>> out, weights = attn(torch.randn(2, 5, 16), causal=True, need_weights=True)
    >>> out.shape, weights.shape
    (torch.Size([2, 5, 16]), torch.Size([2, 4, 5, 5]))
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, rotary: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim, self.num_heads, self.head_dim, self.dropout = dim, num_heads, dim // num_heads, dropout
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim) if rotary else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, T, D) -> (B, H, T, Dh)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` ``(B, T, D)`` to ``key``/``value`` ``(B, S, D)`` (self-attention when omitted).

        Args:
            key_padding_mask: ``(B, S)`` bool, True at padded keys (``nn.MultiheadAttention``'s convention).
            causal: each query sees keys up to its own position (with ``cache``: cached positions come first).
            cache: self-attention only; the new keys and values are appended and attention covers all of them.
            need_weights: also return the weights ``(B, H, T, S)`` (computed explicitly, not by the fused kernel).
        """
        key = query if key is None else key
        value = key if value is None else value
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        offset = cache.length if cache is not None else 0
        if self.rotary is not None:
            q, k = self.rotary(q, offset), self.rotary(k, offset)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, offset + T, Dh)
        mask = None
        if causal and q.shape[2] > 1:  # a single new query after the cache sees every key
            mask = causal_mask(q.shape[2], k.shape[2], q.device)
        if key_padding_mask is not None:
            padding = padding_to_attention_mask(key_padding_mask)
            mask = padding if mask is None else mask & padding
        dropout = self.dropout if self.training else 0.0
        out, weights = scaled_dot_product_attention(q, k, v, mask, dropout, need_weights)
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights  # (B, H, T, Dh) -> (B, T, D)


class FeedForward(nn.Sequential):
    """``Linear -> GELU -> Linear -> Dropout``, ``mlp_ratio`` times wider inside."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    """Transformer block: self-attention and an MLP, each a residual branch; ``causal`` makes it a decoder-only (GPT)
    block.

    Pre-norm (``norm_first=True``, GPT-2 and most models since): ``x + f(norm(x))``, a clean residual path that
    trains deep stacks without warmup. Post-norm (``norm_first=False``, Vaswani et al. 2017): ``norm(x + f(x))``.

    Args:
        dim: model width.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``dim``.
        dropout: dropout on attention weights and on each residual branch.
        rotary: rotary positions in the attention.
        norm_first: pre-norm (True) or post-norm (False).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        rotary: bool = False,
        norm_first: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout, rotary=rotary)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, T, D)`` out, and the attention weights when ``need_weights``."""
        attend_to = self.norm1(x) if self.norm_first else x
        attended, weights = self.attn(
            attend_to, key_padding_mask=key_padding_mask, causal=causal, cache=cache, need_weights=need_weights
        )
        if self.norm_first:
            x = x + self.drop(attended)
            return x + self.mlp(self.norm2(x)), weights
        x = self.norm1(x + self.drop(attended))
        return self.norm2(x + self.mlp(x)), weights


class DecoderBlock(nn.Module):
    """Pre-norm Transformer decoder block: causal self-attention, cross-attention to the encoder memory, an MLP.

    Args:
        dim: model width.
        num_heads: attention heads.
        mlp_ratio: MLP width over ``dim``.
        dropout: dropout on attention weights and on each residual branch.
        rotary: rotary positions in the self-attention.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, rotary: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout, rotary=rotary)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, T, D)`` out from targets ``x`` and ``memory`` ``(B, S, D)``; the cross-attention weights when
        ``need_weights``."""
        attended, _ = self.self_attn(self.norm1(x), causal=True, cache=cache)
        x = x + self.drop(attended)
        crossed, weights = self.cross_attn(
            self.norm2(x), memory, key_padding_mask=memory_padding_mask, need_weights=need_weights
        )
        x = x + self.drop(crossed)
        return x + self.mlp(self.norm3(x)), weights
