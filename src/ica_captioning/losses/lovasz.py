"""Batched Lovász hinge: the convex surrogate of the Jaccard loss (Berman et al., CVPR 2018).

For one pair (a score vector ``s`` over ``L`` cells and a binary mask ``y``) the Lovász hinge is
the Lovász extension of the Jaccard loss ``ΔJ(M) = |M| / |{y = 1} ∪ M|`` (``M`` = set of
mispredicted cells) evaluated at the hinge errors ``m = relu(1 − s · (2y − 1))``::

    loss = Σ_i m_{π_i} · (ΔJ({π_1..π_i}) − ΔJ({π_1..π_{i−1}})),   π sorts m in decreasing order.

The set-function differences only depend on how many foreground / background cells come first in
the sorted order, so for all pairs at once they follow from one ``torch.sort`` along the last
dimension and one ``cumsum`` of the sorted mask (Berman's ``lovasz_grad``). Nothing here loops
over pairs.
"""

from __future__ import annotations

import torch

__all__ = ["jaccard_lovasz_weights", "lovasz_hinge"]


def _as_float_targets(targets: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Validate a binary mask and return it as ``like``'s float dtype.

    Args:
        targets: ``[..., L]`` bool, integer or floating mask whose values are 0 or 1.
        like: floating tensor whose dtype and device the result takes.

    Returns:
        ``[..., L]`` float mask with values in {0., 1.}.

    Raises:
        TypeError: complex targets.
        ValueError: values other than 0 and 1.
    """
    if targets.dtype == torch.bool:
        return targets.to(dtype=like.dtype, device=like.device)
    if targets.is_complex():
        raise TypeError(f"targets must be a bool or 0/1 mask, got dtype {targets.dtype}")
    # Non-bool masks are accepted only if they are truly binary: a soft or 0/255 mask would
    # silently give a loss that is not the Jaccard surrogate.
    if targets.numel() and not bool(((targets == 0) | (targets == 1)).all()):
        bad = targets[(targets != 0) & (targets != 1)].flatten()[:5].tolist()
        raise ValueError(f"targets must contain only 0 and 1 (or be bool); found values {bad}")
    return targets.to(dtype=like.dtype, device=like.device)


def jaccard_lovasz_weights(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Differences of the Jaccard loss along a sorted order (Berman's ``lovasz_grad``, batched).

    Row ``n``, position ``i`` holds ``ΔJ({π_1..π_i}) − ΔJ({π_1..π_{i−1}})`` where the cells are
    taken in the order in which ``gt_sorted`` lists their ground truth. With ``p_i`` foreground
    and ``q_i`` background cells among the first ``i``, and ``G`` foreground cells in total,
    ``ΔJ = 1 − (G − p_i) / (G + q_i)``.

    ``G + q_i`` is never 0: either ``G ≥ 1``, or the mask is empty and every cell is background so
    ``q_i = i ≥ 1``. An empty mask therefore gives weights ``[1, 0, …, 0]`` (any mistake costs the
    whole Jaccard loss, ``ΔJ(∅) = 0`` and ``ΔJ(M) = 1`` for ``M ≠ ∅``), and no 0/0.

    Args:
        gt_sorted: ``[N, L]`` float mask (0./1.), each row permuted into the sort order.

    Returns:
        ``[N, L]`` weights, same dtype; every row is non-negative and sums to ``ΔJ(all cells)``.
    """
    gts = gt_sorted.sum(dim=-1, keepdim=True)  # [N, 1]
    intersection = gts - gt_sorted.cumsum(dim=-1)  # [N, L]
    union = gts + (1.0 - gt_sorted).cumsum(dim=-1)  # [N, L], ≥ 1 everywhere (see above)
    jaccard = 1.0 - intersection / union  # [N, L]
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def lovasz_hinge(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-pair Lovász hinge of real-valued scores against binary masks (no reduction).

    This is Berman et al.'s ``lovasz_hinge_flat`` applied to every row, i.e. their
    ``lovasz_hinge(..., per_image=True)`` without the final mean. Scores are used as they are:
    ``s > 0`` predicts foreground and ``|s| ≥ 1`` is a full margin. Half-precision inputs are
    upcast to float32 (the cumulative Jaccard terms need it); float64 stays float64.

    Args:
        scores: ``[N, L]`` floating scores (any real values).
        targets: ``[N, L]`` bool (or 0/1 numeric) ground-truth masks.

    Returns:
        ``[N]`` per-pair losses (float32, or float64 for float64 scores), each ≥ 0 and finite
        for finite scores. Differentiable with respect to ``scores``.

    Raises:
        TypeError: non-floating scores or complex targets.
        ValueError: scores not 2-D, shape mismatch, or non-binary targets.
    """
    if not torch.is_tensor(scores) or not torch.is_tensor(targets):
        raise TypeError("scores and targets must be torch tensors")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating tensor, got dtype {scores.dtype}")
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape [N, L], got {tuple(scores.shape)}")
    if targets.shape != scores.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} does not match scores shape "
            f"{tuple(scores.shape)}"
        )
    if scores.dtype != torch.float64:
        # bf16 has 8 mantissa bits: ties and cumulative counts would be wrong in it.
        scores = scores.float()
    gt = _as_float_targets(targets, scores)  # [N, L]
    if scores.shape[-1] == 0:
        # No cells: nothing can be mispredicted. Keep the graph for the caller's backward().
        return scores.sum(dim=-1) * 0.0

    signs = 2.0 * gt - 1.0  # [N, L], +1 foreground / −1 background
    errors = 1.0 - scores * signs  # [N, L] hinge errors before relu
    # One sort for all pairs. Sorting the raw errors orders relu(errors) the same way (relu is
    # monotone); cells with negative errors contribute 0 whatever their order.
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)  # [N, L], [N, L]
    with torch.no_grad():
        # The weights are piecewise constant in the scores: no gradient flows through them.
        weights = jaccard_lovasz_weights(gt.gather(-1, perm))  # [N, L]
    return (torch.relu(errors_sorted) * weights).sum(dim=-1)  # [N]
