"""Attention maps of given (reference) captions by teacher forcing the decoder."""

from __future__ import annotations

import torch
from torch import Tensor

from ica_captioning.decoding.beam_search import StepDecoder
from ica_captioning.model.protocol import longest_first, step_attention
from ica_captioning.tokens import PAD_ID


@torch.inference_mode()
def teacher_forced_alphas(
    decoder: StepDecoder, features: Tensor, ids: Tensor, pad_id: int = PAD_ID
) -> Tensor:
    """Attention of every word of given captions.

    Step ``i`` is fed ``ids[:, i]`` (``<start>`` at ``i = 0``) and predicts word ``i``, so its
    attention map belongs to token position ``i`` (docs/design.md, "Token alignment").

    Captions are decoded longest first and step ``t`` runs only on the captions that still have
    a token to predict — a prefix of the sorted batch, so features and state are sliced as views,
    without copies. Padding steps are never computed (their output rows are zero), which saves
    the work a padded batch of captions of mixed lengths would waste.

    Args:
        decoder: object with ``init_state`` / ``step`` (the contract's ``model.decoder``).
        features: ``[N, L, D]`` features, one row per caption (repeat an image's features for
            each of its captions).
        ids: ``[N, S]`` long, ``[<start>, w_0, ..., w_{n-1}, <end>, <pad>...]``.
        pad_id: id of ``<pad>`` (the caption's length is its number of non-pad ids).

    Returns:
        ``[N, S - 1, L]`` float: row ``i`` is the attention of the step predicting ``ids[:, i+1]``
        (word ``i``, then ``<end>``), zeros after the caption's last token.
    """
    if features.dim() != 3 or ids.dim() != 2 or features.shape[0] != ids.shape[0]:
        raise ValueError(
            f"features must be [N, L, D] and ids [N, S] with the same N, got "
            f"{tuple(features.shape)} and {tuple(ids.shape)}"
        )
    n, num_cells, _ = features.shape
    steps = ids.shape[1] - 1
    out = torch.zeros(n, max(steps, 0), num_cells, device=features.device)
    if n == 0 or steps <= 0:
        return out
    ids = ids.to(features.device).long()
    # Steps a caption needs: one per token after <start> (its non-pad ids minus one).
    needed = ((ids != pad_id).sum(dim=1) - 1).clamp(min=0)  # [N]
    order, active_rows = longest_first(needed, steps)
    feats = features.index_select(0, order)  # [N, L, D]
    ids_sorted = ids.index_select(0, order)  # [N, S]
    state = tuple(decoder.init_state(feats))
    out_sorted = torch.zeros_like(out)
    for t, active in enumerate(active_rows):
        # Captions needing more than t steps form a prefix of the sorted batch.
        if active == 0:
            break
        if active < state[0].shape[0]:
            state = tuple(s[:active] for s in state)
        _, alpha, state = decoder.step(feats[:active], ids_sorted[:active, t], state)
        out_sorted[:active, t] = step_attention(alpha).float()  # [n', L]
    out[order] = out_sorted
    return out


@torch.inference_mode()
def teacher_forced_heads(decoder: StepDecoder, features: Tensor, ids: Tensor) -> Tensor:
    """Every map a decoder's ``step`` returns for given captions, heads kept apart.

    Like :func:`teacher_forced_alphas` but without the head mean and without skipping padding
    (every caption runs all ``S − 1`` steps; meant for a few captions, e.g. the figures).

    Args:
        decoder: object with ``init_state`` / ``step``.
        features: ``[N, L, D]`` features, one row per caption.
        ids: ``[N, S]`` long, ``[<start>, w_0, ..., w_{n-1}, ...]``.

    Returns:
        ``[N, S - 1, H, L]`` float: the maps of the step predicting ``ids[:, i + 1]``; ``H = 1``
        for a decoder with one map per step (Show-Attend-Tell), the Transformer's selected maps
        (``decoder.attention_maps``) otherwise.
    """
    if features.dim() != 3 or ids.dim() != 2 or features.shape[0] != ids.shape[0]:
        raise ValueError(
            f"features must be [N, L, D] and ids [N, S] with the same N, got "
            f"{tuple(features.shape)} and {tuple(ids.shape)}"
        )
    ids = ids.to(features.device).long()
    state = tuple(decoder.init_state(features))
    maps = []
    for t in range(ids.shape[1] - 1):
        _, alpha, state = decoder.step(features, ids[:, t], state)
        maps.append((alpha if alpha.dim() == 3 else alpha.unsqueeze(1)).float())  # [N, H, L]
    if not maps:
        return torch.zeros(features.shape[0], 0, 1, features.shape[1], device=features.device)
    return torch.stack(maps, dim=1)
