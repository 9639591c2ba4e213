"""Caption metrics (pycocoevalcap), grounding metrics and CHAIR hallucination rates."""

from ica_captioning.metrics.captions import (
    CAPTION_METRICS,
    Availability,
    CaptionScorer,
    caption_metrics,
    java_major_version,
    meteor_availability,
    ptb_tokenize,
    spice_availability,
)
from ica_captioning.metrics.chair import caption_mentions, chair
from ica_captioning.metrics.grounding import (
    WORD_METRICS,
    attention_correctness,
    mass_iou,
    mention_pairs,
    pair_scores,
    summarize,
    topk_iou,
    word_scores,
)

__all__ = [
    "CAPTION_METRICS",
    "WORD_METRICS",
    "Availability",
    "CaptionScorer",
    "attention_correctness",
    "caption_mentions",
    "caption_metrics",
    "chair",
    "java_major_version",
    "mass_iou",
    "mention_pairs",
    "meteor_availability",
    "pair_scores",
    "ptb_tokenize",
    "spice_availability",
    "summarize",
    "topk_iou",
    "word_scores",
]
