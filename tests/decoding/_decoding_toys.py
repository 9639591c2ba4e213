"""A tiny attention decoder implementing the contract's step interface, for decoding tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ToyDecoder(nn.Module):
    """GRU-like toy: logits depend on the image features, the history and attention."""

    def __init__(self, vocab: int, dim: int, hidden: int = 8, seed: int = 0, scale: float = 2.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Parameter(torch.randn(vocab, hidden, generator=g))
        self.w_h = nn.Parameter(torch.randn(hidden, hidden, generator=g) / hidden**0.5)
        self.w_init = nn.Parameter(torch.randn(dim, hidden, generator=g))
        self.w_att = nn.Parameter(torch.randn(hidden, dim, generator=g))
        self.w_ctx = nn.Parameter(torch.randn(dim, hidden, generator=g))
        self.w_out = nn.Parameter(scale * torch.randn(hidden, vocab, generator=g) / hidden**0.5)

    def init_state(self, features: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(features.mean(1) @ self.w_init)  # [N, H]
        return h, torch.zeros_like(h)

    def step(self, features: Tensor, tokens: Tensor, state: tuple[Tensor, Tensor]):
        h, c = state
        alpha = torch.softmax(torch.einsum("nld,nd->nl", features, h @ self.w_att), dim=1)
        ctx = torch.einsum("nl,nld->nd", alpha, features)  # [N, D]
        h = torch.tanh(h @ self.w_h + self.emb[tokens] + ctx @ self.w_ctx)
        c = c + h  # a second state tensor, to check every state tensor is reordered
        logits = (h + 0.1 * c) @ self.w_out
        return logits, alpha, (h, c)


class ToyModel(nn.Module):
    def __init__(self, vocab: int, num_cells: int, dim: int, seed: int = 0):
        super().__init__()
        self.decoder = ToyDecoder(vocab, dim, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        self.proj = nn.Parameter(torch.randn(3, dim, generator=g))
        self.num_cells = num_cells

    def encode(self, images: Tensor) -> Tensor:
        # [B, 3, H, W] -> [B, L, D] with L = H * W
        b = images.shape[0]
        return images.flatten(2).transpose(1, 2).reshape(b, -1, 3) @ self.proj
