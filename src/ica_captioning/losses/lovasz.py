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


def _as_bool_targets(targets: torch.Tensor) -> torch.Tensor:
    """Validate a binary mask and return it as bool.

    Args:
        targets: ``[..., L]`` bool, integer or floating mask whose values are 0 or 1.

    Returns:
        ``[..., L]`` bool mask.

    Raises:
        TypeError: complex targets.
        ValueError: values other than 0 and 1.
    """
    if targets.dtype == torch.bool:
        return targets
    if targets.is_complex():
        raise TypeError(f"targets must be a bool or 0/1 mask, got dtype {targets.dtype}")
    # Non-bool masks are accepted only if they are truly binary: a soft or 0/255 mask would
    # silently give a loss that is not the Jaccard surrogate.
    if targets.numel() and not bool(((targets == 0) | (targets == 1)).all()):
        bad = targets[(targets != 0) & (targets != 1)].flatten()[:5].tolist()
        raise ValueError(f"targets must contain only 0 and 1 (or be bool); found values {bad}")
    return targets != 0


def jaccard_lovasz_weights(
    gt_sorted: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Differences of the Jaccard loss along a sorted order (Berman's ``lovasz_grad``, batched).

    Row ``n``, position ``i`` (1-based) holds ``ΔJ({π_1..π_i}) − ΔJ({π_1..π_{i−1}})`` where the
    cells are taken in the order in which ``gt_sorted`` lists their ground truth. With ``p_i``
    foreground cells among the first ``i`` and ``G`` foreground cells in total, Berman's
    ``1 − (G − p_i) / (G + (i − p_i))`` simplifies to::

        ΔJ({π_1..π_i}) = i / (G + i − p_i)

    which needs one cumsum and one division, and whose denominator is ≥ ``i`` ≥ 1 because
    ``p_i ≤ G``: no 0/0 even for an empty mask. An empty mask gives weights ``[1, 0, …, 0]``
    (``ΔJ(M) = 1`` for every ``M ≠ ∅``); an all-foreground mask gives ``1/L`` everywhere.

    Args:
        gt_sorted: ``[N, L]`` bool or 0/1 float mask, each row permuted into the sort order.
        dtype: floating dtype of the result; default ``gt_sorted``'s if floating, else float32.

    Returns:
        ``[N, L]`` weights; every row is non-negative and sums to ``ΔJ(all cells)`` (1 unless the
        row has no cell).
    """
    if dtype is None:
        dtype = gt_sorted.dtype if gt_sorted.is_floating_point() else torch.float32
    num_cells = gt_sorted.shape[-1]
    fg_seen = gt_sorted.cumsum(dim=-1, dtype=dtype)  # [N, L]  p_i
    fg_total = fg_seen[..., -1:]  # [N, 1]  G
    rank = torch.arange(1, num_cells + 1, dtype=dtype, device=gt_sorted.device)  # [L]  i
    jaccard = rank / (fg_total + (rank - fg_seen))  # [N, L]  ΔJ of each prefix
    weights = torch.empty_like(jaccard)  # [N, L]
    weights[..., :1] = jaccard[..., :1]
    torch.sub(jaccard[..., 1:], jaccard[..., :-1], out=weights[..., 1:])
    return weights


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
        ValueError: scores not 2-D, shape or device mismatch, or non-binary targets.
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
    if targets.device != scores.device:
        raise ValueError(f"targets are on {targets.device} but scores on {scores.device}")
    if scores.dtype != torch.float64:
        # bf16 has 8 mantissa bits: ties and cumulative counts would be wrong in it.
        scores = scores.float()
    gt = _as_bool_targets(targets)  # [N, L]
    if scores.shape[-1] == 0:
        # No cells: nothing can be mispredicted. Keep the graph for the caller's backward().
        return scores.sum(dim=-1) * 0.0

    signs = torch.where(gt, 1.0, -1.0).to(scores.dtype)  # [N, L], +1 fg / −1 bg
    errors = torch.addcmul(scores.new_ones(()), scores, signs, value=-1.0)  # [N, L] 1 − s·sign
    # One sort for all pairs. Sorting the raw errors orders relu(errors) the same way (relu is
    # monotone); cells with negative errors contribute 0 whatever their order.
    errors_sorted, perm = torch.sort(errors, dim=-1, descending=True)  # [N, L], [N, L]
    with torch.no_grad():
        # The weights are piecewise constant in the scores: no gradient flows through them.
        weights = jaccard_lovasz_weights(gt.gather(-1, perm), scores.dtype)  # [N, L]
    # Elementwise product + sum rather than a dot/vecdot: autocast would run a dot in bf16.
    return (torch.relu(errors_sorted) * weights).sum(dim=-1)  # [N]
