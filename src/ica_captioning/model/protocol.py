"""What every consumer needs from a captioner: the decoder protocol (docs/contracts.md).

Beam search, greedy decoding, teacher-forced attention, evaluation, the ICA loss and the figures
use a captioner only through these methods, so another architecture (a Transformer decoder)
plugs in by providing them. Shapes: ``B`` images or captions, ``N`` images, ``R = N·K`` decoder
rows (``K`` per image, e.g. beams), ``L = G²`` grid cells, ``H`` attention heads, ``V`` words.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

#: A decoder's recurrent state: a tuple of tensors, each with its batch dimension first.
State = tuple[torch.Tensor, ...]


@runtime_checkable
class CaptionDecoder(Protocol):
    """Step-wise decoding over annotation vectors.

    A decoder may also declare ``image_state_slots: tuple[int, ...]``: the state slots that are
    indexed by image (``N`` rows), not by decoder row (``R`` rows). It then accepts
    ``features [N, L, D]`` with ``tokens [N·K]`` (rows ``n·K … n·K + K − 1`` belong to image
    ``n``), and beam search shares those slots between the ``K`` beams of an image. Without it,
    every state slot and ``features`` have one row per decoder row.
    """

    def init_state(self, features: torch.Tensor) -> State:
        """``features [N, L, D]`` → the state before the first step (``K = 1``)."""
        ...

    def step(
        self, features: torch.Tensor, tokens: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """``tokens [R]`` → ``(logits [R, V], attention [R, L] or [R, H, L], new state)``."""
        ...


@runtime_checkable
class CaptionModel(Protocol):
    """A trained captioner as evaluation and the figures see it."""

    decoder: CaptionDecoder
    #: ``{"itos": [...], ...}`` of a loaded model (index = token id; tokens.SPECIAL_WORDS first).
    vocabulary: dict[str, Any] | None

    @property
    def grid_size(self) -> int:
        """G of the attention grid (``L = G²``)."""
        ...

    @property
    def image_size(self) -> int:
        """Side S of the images :meth:`encode` takes (``preprocess_images``)."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` ImageNet-normalised images → annotation vectors ``[B, L, D]``."""
        ...

    def __call__(
        self,
        images: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        image_inv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: ``inputs [B, T]`` → ``(logits [B, T, V], attention [B, T, L])``.

        A multi-head decoder returns ``[B, T, H, L]``; :func:`sequence_attention` reduces it.
        """
        ...


def step_attention(attention: torch.Tensor) -> torch.Tensor:
    """One map per decoder row: ``[R, L]`` as it is, ``[R, H, L]`` averaged over heads → ``[R, L]``.

    Evaluation, beam search and the figures score one map per word. The head mean is again a
    distribution over the cells, and it is what the ICA loss's default ``head_reduction="mean"``
    supervises.
    """
    return attention.mean(dim=1) if attention.dim() == 3 else attention


def sequence_attention(attention: torch.Tensor) -> torch.Tensor:
    """One map per teacher-forced word: ``[B, T, H, L]`` head-averaged → ``[B, T, L]``."""
    return attention.mean(dim=2) if attention.dim() == 4 else attention


def longest_first(needed: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[int]]:
    """Order for decoding captions of different lengths without computing their padding.

    Sorted longest first, the captions that still need step ``t`` are a prefix of the batch, so
    a step-wise loop runs step ``t`` on the first ``active[t]`` rows (views, no copies).

    Args:
        needed: ``[B]`` long, the steps each caption needs.
        steps: the steps of the loop.

    Returns:
        ``(order [B], active)``: the stable longest-first permutation and, per step ``t``, the
        number of captions with ``needed > t``.
    """
    order = torch.argsort(needed, descending=True, stable=True)  # [B]
    t = torch.arange(steps, device=needed.device)
    active = (needed.unsqueeze(0) > t.unsqueeze(1)).sum(dim=1)  # [steps]
    return order, active.tolist()
