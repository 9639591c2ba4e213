"""Straightforward per-pair references written from the definitions (no code under test used).

The Lovász hinge is computed as in the paper's Definition 1: hinge errors m, a permutation π that
sorts m in decreasing order, and explicit set-function differences of the Jaccard loss
ΔJ(M) = |M| / |{y = 1} ∪ M| evaluated on Python sets — no cumsum formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def jaccard_set_loss(mistakes: set[int], foreground: set[int]) -> float:
    """ΔJ(M) = |M| / |fg ∪ M|, with ΔJ(∅) = 0."""
    if not mistakes:
        return 0.0
    return len(mistakes) / len(foreground | mistakes)


def lovasz_hinge_pair(scores: Sequence[float], target: Sequence[bool]) -> float:
    """Lovász extension of ΔJ at the hinge errors of one pair (float64 Python arithmetic)."""
    errors = [max(0.0, 1.0 - float(s) * (1.0 if y else -1.0)) for s, y in zip(scores, target)]
    order = sorted(range(len(errors)), key=lambda i: -errors[i])  # decreasing, stable
    foreground = {i for i, y in enumerate(target) if y}
    total, previous, prefix = 0.0, 0.0, set()
    for i in order:
        prefix.add(i)
        current = jaccard_set_loss(prefix, foreground)
        total += errors[i] * (current - previous)
        previous = current
    return total


def map_scores(alpha: Sequence[float], mapping: str, log_eps: float = 1e-6) -> list[float]:
    """The score mappings of docs/design.md, written out per cell."""
    num_cells = len(alpha)
    if mapping == "scaled":
        return [2.0 * num_cells * float(a) - 1.0 for a in alpha]
    if mapping == "log":
        return [math.log(num_cells * float(a) + log_eps) for a in alpha]
    if mapping == "identity":
        return [float(a) for a in alpha]
    raise AssertionError(mapping)


def iou(pred: Sequence[bool], target: Sequence[bool]) -> float:
    """Intersection over union of two binary vectors; 1 when both are empty."""
    inter = sum(1 for p, y in zip(pred, target) if p and y)
    union = sum(1 for p, y in zip(pred, target) if p or y)
    return 1.0 if union == 0 else inter / union
