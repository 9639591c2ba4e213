"""Attention maps of given (reference) captions by teacher forcing the decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ica_captioning.decoding.beam_search import StepDecoder


@torch.inference_mode()
def teacher_forced_alphas(decoder: StepDecoder, features: Tensor, ids: Tensor) -> Tensor:
    """Attention of every word of given captions.

    Step ``i`` is fed ``ids[:, i]`` (``<start>`` at ``i = 0``) and predicts word ``i``, so its
    attention map belongs to token position ``i`` (``docs/contracts.md`` alignment).

    Args:
        decoder: object with ``init_state`` / ``step`` (the contract's ``model.decoder``).
        features: ``[N, L, D]`` features, one row per caption (repeat an image's features for
            each of its captions).
        ids: ``[N, S]`` long, ``[<start>, w_0, ..., w_{n-1}, <end>, <pad>...]``.

    Returns:
        ``[N, S - 1, L]`` float: row ``i`` is the attention of the step predicting ``ids[:, i+1]``
        (word ``i``, then ``<end>``, then padding steps whose values are meaningless).
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
    state = tuple(decoder.init_state(features))
    for t in range(steps):
        _, alpha, state = decoder.step(features, ids[:, t], state)
        out[:, t] = alpha.float()
    return out


@torch.inference_mode()
def reference_alphas(
    model: Any, images: Tensor, image_index: Tensor, ids: Tensor, batch_size: int = 256
) -> Tensor:
    """Teacher-forced attention for many captions of a few images.

    Args:
        model: captioner with ``encode`` and ``decoder`` (contract interface).
        images: ``[M, 3, H, W]`` ImageNet-normalised images.
        image_index: ``[N]`` long, the row of ``images`` each caption describes.
        ids: ``[N, S]`` long encoded captions (``<start> ... <end>`` then ``<pad>``).
        batch_size: captions decoded together.

    Returns:
        ``[N, S - 1, L]`` attention maps (see :func:`teacher_forced_alphas`).
    """
    if hasattr(model, "eval"):
        model.eval()
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):
        device = torch.device("cpu")
    if len(images) == 0:
        raise ValueError("no images to encode")
    encode_batch = 64  # images per encoder call: bounds activation memory on CPU and GPU
    features = torch.cat(
        [
            model.encode(images[lo : lo + encode_batch].to(device))
            for lo in range(0, len(images), encode_batch)
        ]
    )  # [M, L, D]
    image_index = image_index.to(features.device).long()
    parts = [
        teacher_forced_alphas(
            model.decoder,
            features.index_select(0, image_index[lo : lo + batch_size]),
            ids[lo : lo + batch_size],
        )
        for lo in range(0, ids.shape[0], batch_size)
    ]
    if not parts:
        return torch.zeros(0, max(ids.shape[1] - 1, 0), features.shape[1], device=features.device)
    return torch.cat(parts)
