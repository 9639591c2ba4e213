"""The ICA loss: Lovász hinge between word attention maps and object masks (paper §3.1).

Per valid (caption, matched token) pair the decoder's attention map ``α`` over the ``L`` grid
cells is mapped to hinge scores (see :func:`attention_to_scores`) and compared with the binary
grid mask of the object the token names by the Lovász hinge (:func:`lovasz_hinge`). The loss is
the mean over valid pairs, and a graph-connected 0 when a batch has none.

Why a mapping: ``α`` is a softmax over ``L`` cells, so its entries are ≈ ``1/L`` (≈ 0.005 for a
14×14 grid). Fed raw, every hinge error ``1 ∓ α`` is ≈ 1, the loss stays ≈ 1 whatever the model
attends to (perfect pointing at one mask cell gives ``1 − 1/L``), and its gradient with respect to
the attention logits is ``O(α)`` — it vanishes. ``2·L·α − 1`` puts uniform attention at score 1
(the hinge margin) and makes the loss 0 exactly when the map is 0 off the mask and ≥ ``1/L`` on
every mask cell.
"""

from __future__ import annotations

import torch

from ica_captioning.losses.lovasz import lovasz_hinge

__all__ = ["HEAD_REDUCTIONS", "MAPPINGS", "REDUCTIONS", "attention_to_scores", "ica_loss"]

#: Score mappings accepted by :func:`attention_to_scores` / :func:`ica_loss`.
MAPPINGS: tuple[str, ...] = ("scaled", "log", "identity")
#: Rules to combine multi-head attention ``[B, H, T, L]`` (see :func:`ica_loss`).
HEAD_REDUCTIONS: tuple[str, ...] = ("mean", "max", "per_head")
#: Reductions over valid pairs accepted by :func:`ica_loss`.
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def attention_to_scores(
    attention: torch.Tensor, mapping: str, *, log_eps: float = 1e-6
) -> torch.Tensor:
    """Map attention weights to Lovász-hinge scores.

    - ``"scaled"``: ``2·L·α − 1``. Uniform attention (``α = 1/L``) → score 1, i.e. exactly the
      hinge margin; ``α = 0`` → −1 (full margin for background); range ``[−1, 2L − 1]``.
    - ``"log"``: ``log(L·α + log_eps)``. Uniform attention → ≈ 0 (decision boundary); a cell needs
      ``α ≥ e/L`` for a full foreground margin and ``α ≤ 1/(e·L)`` for a full background margin.
      ``log_eps`` is added rather than clamping ``α``: a clamp would give zero gradient to exactly
      the masked cells that attention ignores; the sum keeps scores ≥ ``log(log_eps)`` (finite)
      for ``α ≥ 0``.
    - ``"identity"``: ``α`` itself (kept for ablations; its gradient vanishes, see module doc).

    Args:
        attention: ``[..., L]`` floating attention weights (a distribution over the last dim).
        mapping: one of :data:`MAPPINGS`.
        log_eps: additive smoothing inside the log of the ``"log"`` mapping (> 0).

    Returns:
        ``[..., L]`` scores, same dtype as ``attention``.

    Raises:
        ValueError: unknown mapping or non-positive ``log_eps``.
    """
    num_cells = attention.shape[-1]
    if mapping == "scaled":
        return 2.0 * num_cells * attention - 1.0
    if mapping == "log":
        if not log_eps > 0:
            raise ValueError(f"log_eps must be > 0 for the 'log' mapping, got {log_eps}")
        # The clamp is inactive for α ≥ 0 (argument ≥ log_eps); it only keeps invalid negative
        # weights from producing NaN.
        return torch.log(torch.clamp(num_cells * attention + log_eps, min=0.5 * log_eps))
    if mapping == "identity":
        return attention
    raise ValueError(f"unknown mapping {mapping!r}; expected one of {MAPPINGS}")


def _check_valid(valid: torch.Tensor | None, pair_shape: torch.Size) -> None:
    """Check that ``valid`` is a bool mask over the pair dims ``pair_shape`` (``[N]``/``[B, T]``).

    Raises:
        TypeError: ``valid`` is not a bool tensor.
        ValueError: wrong shape.
    """
    if valid is None:
        return
    if not torch.is_tensor(valid) or valid.dtype != torch.bool:
        got = valid.dtype if torch.is_tensor(valid) else type(valid).__name__
        raise TypeError(f"valid must be a bool tensor (use .bool()), got {got}")
    if valid.shape != pair_shape:
        raise ValueError(
            f"valid shape {tuple(valid.shape)} does not match the pair dims {tuple(pair_shape)} "
            "of attention"
        )


def ica_loss(
    attention: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor | None = None,
    *,
    mapping: str,
    head_reduction: str = "mean",
    reduction: str = "mean",
    log_eps: float = 1e-6,
) -> torch.Tensor:
    """Mean Lovász hinge between attention maps and binary object masks over valid pairs.

    Accepted layouts (``L`` = grid cells, ``N`` pairs, ``B`` captions, ``T`` tokens, ``H`` heads):

    ============================  ==========================  ============
    attention                     targets                     valid
    ============================  ==========================  ============
    ``[N, L]``                    ``[N, L]``                  ``[N]``
    ``[B, T, L]``                 ``[B, T, L]``               ``[B, T]``
    ``[B, H, T, L]`` (multi-head) ``[B, T, L]`` or same shape ``[B, T]``
    ============================  ==========================  ============

    Multi-head attention is combined by ``head_reduction``:

    - ``"mean"`` (default): average the maps over heads, then one hinge per pair. The mean of
      distributions is a distribution, so the score mapping keeps its meaning.
    - ``"max"``: elementwise max over heads (a cell counts as attended if any head attends it);
      the max map sums to ≥ 1, so margins are easier to reach than with ``"mean"``.
    - ``"per_head"``: one hinge per head and pair, averaged over heads (each pair still weighs 1),
      pushing every head onto the object.

    With 4-D targets and ``"mean"``/``"max"`` the mask must be the same for every head.

    Only valid pairs are gathered (``attention[valid]`` → ``[N, L]``) before the single sort, so
    padding and unmatched tokens cost nothing. Computation runs in float32 (float64 stays
    float64); bf16/fp16 attention from autocast is upcast after the gather.

    Args:
        attention: attention weights, layout as above, floating.
        targets: binary masks (bool or 0/1), layout as above.
        valid: bool mask of the pairs that count; ``None`` means all pairs.
        mapping: score mapping, one of :data:`MAPPINGS` (see :func:`attention_to_scores`).
        head_reduction: one of :data:`HEAD_REDUCTIONS`; only used for 4-D attention.
        reduction: ``"mean"`` over valid pairs (default), ``"sum"`` (e.g. to normalise by a
            pair count gathered across processes), or ``"none"`` (per-pair losses).
        log_eps: smoothing of the ``"log"`` mapping.

    Returns:
        Scalar loss (float32, or float64 for float64 attention): mean per-pair Lovász hinge over
        valid pairs, or 0 still connected to ``attention``'s graph when no pair is valid. With
        ``reduction="sum"`` the sum (0 when none); with ``"none"`` the ``[N_valid]`` per-pair
        losses in row-major order of the valid pairs (empty when none).

    Raises:
        TypeError: non-floating attention, non-bool ``valid``.
        ValueError: unsupported rank, L = 0, shape mismatch, non-binary targets, unknown mapping or
            head reduction, 4-D targets that differ across heads with ``"mean"``/``"max"``.
    """
    if not torch.is_tensor(attention) or not torch.is_tensor(targets):
        raise TypeError("attention and targets must be torch tensors")
    if not attention.is_floating_point():
        raise TypeError(f"attention must be a floating tensor, got dtype {attention.dtype}")
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; expected one of {MAPPINGS}")
    if head_reduction not in HEAD_REDUCTIONS:
        raise ValueError(
            f"unknown head_reduction {head_reduction!r}; expected one of {HEAD_REDUCTIONS}"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; expected one of {REDUCTIONS}")

    if attention.dim() not in (2, 3, 4):
        raise ValueError(
            "attention must be [N, L], [B, T, L] or [B, H, T, L]; got shape "
            f"{tuple(attention.shape)}"
        )
    if attention.shape[-1] == 0:
        raise ValueError(f"attention {tuple(attention.shape)} has no cells (L = 0)")

    heads = 1
    if attention.dim() in (2, 3):
        if targets.shape != attention.shape:
            raise ValueError(
                f"targets shape {tuple(targets.shape)} does not match attention shape "
                f"{tuple(attention.shape)}"
            )
        _check_valid(valid, attention.shape[:-1])
        # [N, L] or [B, T, L] -> [N_valid, L]
        att = attention if valid is None else attention[valid]
        tgt = targets if valid is None else targets[valid]
        att, tgt = att.reshape(-1, attention.shape[-1]), tgt.reshape(-1, attention.shape[-1])
    else:  # [B, H, T, L]
        b, heads, t, num_cells = attention.shape
        if heads == 0:
            raise ValueError(f"multi-head attention {tuple(attention.shape)} has no heads (H = 0)")
        if targets.shape not in (attention.shape, torch.Size((b, t, num_cells))):
            raise ValueError(
                f"targets shape {tuple(targets.shape)} must be [B, T, L] = {(b, t, num_cells)} or "
                f"equal to the multi-head attention shape {tuple(attention.shape)}"
            )
        _check_valid(valid, torch.Size((b, t)))
        if targets.dim() == 4 and head_reduction != "per_head":
            if not bool((targets == targets[:, :1]).all()):
                raise ValueError(
                    f"head_reduction={head_reduction!r} needs one mask per pair, but the 4-D "
                    "targets differ across heads; pass [B, T, L] targets or use 'per_head'"
                )
            targets = targets[:, 0]
        att = attention.transpose(1, 2)  # [B, T, H, L]
        if valid is not None:
            att = att[valid]  # [N_valid, H, L]
        att = att.reshape(-1, heads, num_cells)  # [N, H, L]
        if targets.dim() == 4:  # per_head with per-head masks
            tgt = targets.transpose(1, 2)  # [B, T, H, L]
            tgt = (tgt if valid is None else tgt[valid]).reshape(-1, num_cells)  # [N*H, L]
        else:
            tgt = targets if valid is None else targets[valid]  # [N, L] (or [B, T, L])
            tgt = tgt.reshape(-1, 1, num_cells)
            if head_reduction == "per_head":
                tgt = tgt.expand(-1, heads, -1)
            tgt = tgt.reshape(-1, num_cells)  # [N*H, L] or [N, L]
        if head_reduction == "per_head":
            att = att.reshape(-1, num_cells)  # [N*H, L]
        else:
            # Upcast before reducing: a mean of bf16 maps loses the small weights.
            att = att.float() if att.dtype != torch.float64 else att
            att = att.mean(dim=1) if head_reduction == "mean" else att.amax(dim=1)  # [N, L]
            heads = 1

    num_pairs = att.shape[0] // heads
    if num_pairs == 0:
        # Sum over an empty slice: exactly 0 (never NaN, even if attention holds inf) and still
        # part of the graph, so loss.backward() works and gives zero gradients.
        empty = attention.flatten()[:0]  # [0]
        empty = empty.double() if attention.dtype == torch.float64 else empty.float()
        return empty if reduction == "none" else empty.sum()

    if att.dtype != torch.float64:
        att = att.float()  # [M, L]; bf16 cannot resolve 2·L·α − 1 around the margin
    scores = attention_to_scores(att, mapping, log_eps=log_eps)  # [M, L]
    per_row = lovasz_hinge(scores, tgt)  # [M] with M = N·H (per_head) or N
    per_pair = per_row.view(num_pairs, heads).mean(dim=1) if heads > 1 else per_row  # [N]
    if reduction == "none":
        return per_pair
    return per_pair.sum() if reduction == "sum" else per_pair.mean()
