"""Thin node functions of the ``matching`` pipeline (logic in :mod:`ica_captioning.matching`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.matching.pseudo_labels import build_pseudo_labels


def match_captions(
    captions: pd.DataFrame, detections: pd.DataFrame, matching: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``pseudo_labels`` and ``matching_stats``.

    Args:
        captions: the ``captions`` table.
        detections: the ``detections`` table.
        matching: ``matching`` parameters.
    """
    lexicon = Lexicon.from_package(matching.get("extra_lexicon") or {})
    return build_pseudo_labels(
        captions,
        detections,
        lexicon,
        score_threshold=float(matching.get("score_threshold", 0.5)),
        grid_size=int(matching.get("grid_size", 14)),
        cell_threshold=float(matching.get("cell_threshold", 0.5)),
        progress=bool(matching.get("progress", True)),
    )
