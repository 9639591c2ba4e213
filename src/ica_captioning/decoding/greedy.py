"""Batched greedy decoding (used for validation during training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ica_captioning.model.protocol import CaptionDecoder, step_attention
from ica_captioning.tokens import END_ID, PAD_ID, START_ID


@torch.no_grad()
def greedy_decode(
    decoder: CaptionDecoder, features: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched greedy decoding.

    Args:
        decoder: any decoder of the protocol (``init_state``, ``step``).
        features: ``[B, L, D]`` annotations.
        max_len: maximum number of generated tokens (``<end>`` included).

    Returns:
        ``(tokens [B, max_len] long, alphas [B, max_len, L], lengths [B])`` where ``lengths``
        counts the words before ``<end>`` and tokens after it are ``<pad>`` (``PAD_ID``).
    """
    batch = features.shape[0]
    state = decoder.init_state(features)
    tokens = torch.full((batch,), START_ID, dtype=torch.long, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    out_tokens, out_alphas = [], []
    for _ in range(max_len):
        logits, alpha, state = decoder.step(features, tokens, state)
        tokens = logits.argmax(dim=-1)
        tokens = torch.where(done, torch.full_like(tokens, PAD_ID), tokens)
        out_tokens.append(tokens)
        out_alphas.append(step_attention(alpha))  # [B, L]
        done = done | (tokens == END_ID)
        if bool(done.all()):
            break
    toks = torch.stack(out_tokens, dim=1)
    ended = (toks == END_ID) | (toks == PAD_ID)
    # Words before the first <end>/<pad>: index of the first True, or the full length.
    first = torch.where(ended.any(1), ended.float().argmax(1), torch.full_like(toks[:, 0], -1))
    lengths = torch.where(first >= 0, first, torch.full_like(first, toks.shape[1]))
    return toks, torch.stack(out_alphas, dim=1), lengths


def decode_words(
    tokens: torch.Tensor, lengths: torch.Tensor, itos: Sequence[str]
) -> list[list[str]]:
    """Token ids ``[B, T]`` and lengths ``[B]`` → word lists."""
    toks = tokens.cpu().tolist()
    return [[itos[t] for t in row[:n]] for row, n in zip(toks, lengths.cpu().tolist())]
