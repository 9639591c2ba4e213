"""Losses: the batched Lovász hinge and the ICA attention loss built on it (no Kedro needed)."""

from ica_captioning.losses.ica import (
    HEAD_REDUCTIONS,
    MAPPINGS,
    REDUCTIONS,
    attention_to_scores,
    ica_loss,
)
from ica_captioning.losses.lovasz import jaccard_lovasz_weights, lovasz_hinge

__all__ = [
    "HEAD_REDUCTIONS",
    "MAPPINGS",
    "REDUCTIONS",
    "attention_to_scores",
    "ica_loss",
    "jaccard_lovasz_weights",
    "lovasz_hinge",
]
