"""Thin node functions of the ``matching`` pipeline (logic in :mod:`ica_captioning.matching`).

The node parses ``params:matching`` once (:mod:`ica_captioning.params`) and passes typed values
on; every value comes from conf/base/parameters_matching.yml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.matching.pseudo_labels import build_pseudo_labels, check_pseudo_labels
from ica_captioning.params import MatchingParams


def match_captions(
    captions: pd.DataFrame, detections: pd.DataFrame, matching: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``pseudo_labels`` and ``matching_stats``.

    Args:
        captions: the ``captions`` table.
        detections: the ``detections`` table.
        matching: ``params:matching``.

    Raises:
        ParameterError: a parameter is missing, unknown or of the wrong type.
        NoPseudoLabelsError: no caption token got a pseudo-label (the reason from the
            statistics), unless ``matching.allow_empty``; fewer captions than
            ``matching.min_labelled_fraction`` with one only log a warning.
    """
    params = MatchingParams.parse(matching, "matching")
    lexicon = Lexicon.from_package(params.extra_lexicon)
    pseudo, stats = build_pseudo_labels(
        captions,
        detections,
        lexicon,
        score_threshold=params.score_threshold,
        grid_size=params.grid_size,
        cell_threshold=params.cell_threshold,
        progress=params.progress,
    )
    check_pseudo_labels(
        stats,
        score_threshold=params.score_threshold,
        allow_empty=params.allow_empty,
        min_labelled_fraction=params.min_labelled_fraction,
    )
    return pseudo, stats
