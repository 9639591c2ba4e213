"""Building blocks of :mod:`ica_captioning.model.transformer`: encodings and pre-LN layers.

Fixed sinusoidal encodings of word positions and of grid cells, and the pre-LayerNorm
self-attention, cross-attention, feed-forward, encoder and decoder layers. The cross-attention
is written out so that its probabilities per head are returned: they are the maps the ICA loss
supervises. Shapes as in :mod:`ica_captioning.model.transformer`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_encoding(positions: int, dim: int) -> Tensor:
    """Fixed sinusoidal encoding (Vaswani et al. 2017) ``[positions, dim]``, ``dim`` even.

    Channel ``2i`` is ``sin(p / 10000^(2i/dim))`` and channel ``2i + 1`` the matching cosine.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal encoding needs an even dimension, got {dim}")
    pos = torch.arange(positions, dtype=torch.float64).unsqueeze(1)  # [P, 1]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


def grid_positional_encoding(grid_size: int, dim: int) -> Tensor:
    """2-D sinusoidal encoding of the ``G × G`` cells, row-major: ``[G², dim]``.

    Cell ``l = r·G + c`` (the order of the annotations and of the pseudo-label masks) gets the
    1-D encoding of its row ``r`` in channels ``[0, dim/2)`` and of its column ``c`` in
    ``[dim/2, dim)``. ``dim`` must be a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f"the 2-D cell encoding needs d_model divisible by 4, got {dim}")
    one = sinusoidal_encoding(grid_size, dim // 2)  # [G, dim/2]
    rows = one.unsqueeze(1).expand(grid_size, grid_size, dim // 2)  # [G(r), G(c), dim/2]
    cols = one.unsqueeze(0).expand(grid_size, grid_size, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(grid_size * grid_size, dim)


class FeedForward(nn.Sequential):
    """``Linear(d_model, d_ff)`` → GELU → dropout → ``Linear(d_ff, d_model)``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )


class SelfAttention(nn.Module):
    """Multi-head self-attention (``scaled_dot_product_attention``), with a step form."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``[B, T, d]`` → q, k, v ``[B, H, T, d_h]``."""
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads)
        return tuple(qkv.permute(2, 0, 3, 1, 4).unbind(0))  # type: ignore[return-value]

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        """``x [B, T, d]`` → ``[B, T, d]`` (token ``t`` sees ``≤ t`` when ``causal``)."""
        q, k, v = self._split(x)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # [B, H, T, d_h]
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One new token per row.

        Args:
            x: ``[R, d]`` (normalised) input of the new token.
            k_cache: ``[R, H, t, d_h]`` keys of the ``t`` earlier tokens.
            v_cache: ``[R, H, t, d_h]`` their values.

        Returns:
            ``(output [R, d], k [R, H, 1, d_h], v [R, H, 1, d_h])`` — the new token's key/value.
        """
        q, k, v = self._split(x.unsqueeze(1))  # [R, H, 1, d_h]
        keys = torch.cat([k_cache.to(k.dtype), k], dim=2)
        values = torch.cat([v_cache.to(v.dtype), v], dim=2)
        y = F.scaled_dot_product_attention(q, keys, values)  # [R, H, 1, d_h]
        return self.out(y.reshape(x.shape)), k, v


class CrossAttention(nn.Module):
    """Multi-head attention to the cells that also returns its probabilities."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.d_head = d_model // num_heads
        self.q = nn.Linear(d_model, d_model)  # rows h·d_h … (h+1)·d_h − 1 are head h's query
        self.kv = nn.Linear(d_model, 2 * d_model)  # keys (first d_model rows), then values
        self.out = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """``memory [N, L, d]`` → keys, values ``[N, H, L, d_h]``."""
        n, cells, _ = memory.shape
        kv = self.kv(memory).view(n, cells, 2, self.num_heads, self.d_head)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``M`` queries per image.

        Args:
            x: ``[N, M, d]`` (normalised) queries: ``T`` steps of one caption, or the ``K`` rows
                of an image in a decoding step.
            k: ``[N, H, L, d_h]`` keys of the image's cells.
            v: ``[N, H, L, d_h]`` their values.

        Returns:
            ``(output [N, M, d], probabilities [N, H, M, L])``; the probabilities sum to 1 over L.
        """
        n, m, d = x.shape
        q = self.q(x).view(n, m, self.num_heads, self.d_head).transpose(1, 2)  # [N, H, M, d_h]
        scores = torch.matmul(q, k.to(q.dtype).transpose(-1, -2)) / math.sqrt(self.d_head)
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # [N, H, M, L]
        y = torch.matmul(probs, v.to(q.dtype))  # [N, H, M, d_h]
        return self.out(y.transpose(1, 2).reshape(n, m, d)), probs


class EncoderLayer(nn.Module):
    """Pre-LN Transformer encoder layer over the cells."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, num_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, L, d_model]`` → the same shape: pre-LN self-attention over the cells, FF."""
        x = x + self.dropout(self.attn(self.norm1(x), causal=False))
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = SelfAttention(d_model, num_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross_attn = CrossAttention(d_model, num_heads)
        self.norm3 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, T, d]``, cross keys/values ``[B, H, L, d_h]`` → ``(x, probs [B, H, T, L])``."""
        x = x + self.dropout(self.self_attn(self.norm1(x), causal=True))
        ctx, probs = self.cross_attn(self.norm2(x), k, v)
        x = x + self.dropout(ctx)
        return x + self.dropout(self.ff(self.norm3(x))), probs

    def step(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One token per row; rows ``n·K … n·K + K − 1`` attend to image ``n``.

        Args:
            x: ``[R, d]``.
            k_cache: ``[R, H, t, d_h]`` self-attention keys so far.
            v_cache: ``[R, H, t, d_h]`` self-attention values so far.
            k: ``[N, H, L, d_h]`` cross-attention keys.
            v: ``[N, H, L, d_h]`` cross-attention values.

        Returns:
            ``(x [R, d], probs [R, H, L], new self key [R, H, 1, d_h], new self value)``.
        """
        sa, k_new, v_new = self.self_attn.step(self.norm1(x), k_cache, v_cache)
        x = x + self.dropout(sa)
        n, rows = k.shape[0], x.shape[0]
        per_image = rows // n if n else 0
        ctx, probs = self.cross_attn(self.norm2(x).view(n, per_image, -1), k, v)  # [N, K, d]
        x = x + self.dropout(ctx.reshape(rows, -1))
        x = x + self.dropout(self.ff(self.norm3(x)))
        probs = probs.transpose(1, 2).reshape(rows, self.cross_attn.num_heads, -1)  # [R, H, L]
        return x, probs, k_new, v_new
