"""Matching caption tokens to detected classes and building grid pseudo-labels."""

from ica_captioning.matching.grid import (
    binarize_fractions,
    dense_cell_fractions,
    pack_grids,
    rle_cell_fractions,
    unpack_grid,
)
from ica_captioning.matching.lexicon import Lexicon, default_lexicon, match_classes

__all__ = [
    "Lexicon",
    "binarize_fractions",
    "default_lexicon",
    "dense_cell_fractions",
    "match_classes",
    "pack_grids",
    "rle_cell_fractions",
    "unpack_grid",
]
