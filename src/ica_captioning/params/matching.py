"""Schema of ``params:matching`` (conf/base/parameters_matching.yml)."""

from __future__ import annotations

from ica_captioning.params.base import Params
from ica_captioning.params.types import Fraction, PositiveInt


class MatchingParams(Params):
    """Caption words → detector classes → grid masks."""

    score_threshold: Fraction
    grid_size: PositiveInt
    cell_threshold: Fraction
    extra_lexicon: dict[str, list[str]]
    progress: bool
    allow_empty: bool
    min_labelled_fraction: Fraction
