"""Training loss: ``CE + α_c · doubly-stochastic regularisation + λ_aux · ICA``.

Every term is computed as a *sum* over its units divided by a normaliser (``token count``,
``caption × cell count``, ``pair count``). Single-process training uses the local counts, which
gives ordinary means. Under DDP the trainer passes the global counts (all-reduced) times the world
size, so that DDP's gradient *average* equals the gradient of the mean over the combined batch —
exactly, whatever the caption lengths per rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ica_captioning.losses.ica import ica_loss
from ica_captioning.model.protocol import sequence_attention
from ica_captioning.tokens import PAD_ID


@dataclass
class LossTerms:
    """Per-batch sums and counts of each loss term (before normalisation)."""

    ce_sum: torch.Tensor
    dsr_sum: torch.Tensor
    ica_sum: torch.Tensor | None
    n_tokens: int
    n_dsr: int
    n_pairs: int


def loss_terms(
    logits: torch.Tensor,
    alphas: torch.Tensor,
    targets: torch.Tensor,
    ica_targets: torch.Tensor | None,
    ica_valid: torch.Tensor | None,
    compute_ica: bool,
    mapping: str,
    head_reduction: str = "mean",
) -> LossTerms:
    """Unnormalised loss terms of a teacher-forced batch.

    Args:
        logits: ``[B, T, V]`` decoder outputs.
        alphas: ``[B, T, L]`` attention maps (step ``t`` predicts ``targets[:, t]``), or a
            multi-head decoder's ``[B, T, H, L]`` (the Transformer's selected maps).
        targets: ``[B, T]`` long next tokens (``ids[:, 1:]``), ``PAD_ID`` = padding.
        ica_targets: ``[B, T, L]`` bool pseudo-label masks, or None.
        ica_valid: ``[B, T]`` bool, which (caption, step) pairs carry a pseudo-label.
        compute_ica: whether to evaluate the ICA term at all (skipped for λ_aux = 0, so the
            baseline pays nothing for it).
        mapping: attention → hinge-score mapping passed to ``ica_loss``.
        head_reduction: how ``ica_loss`` combines multi-head maps (``mean | max | per_head``);
            ignored for ``[B, T, L]``.

    Returns:
        The sums and counts. With multi-head maps the doubly-stochastic term is computed on
        their head mean (:func:`~ica_captioning.model.protocol.sequence_attention`), and the
        ICA term on ``alphas.transpose(1, 2)`` (``[B, H, T, L]``) with ``head_reduction``.
    """
    mask = targets != PAD_ID  # [B, T] valid (non-padded) steps
    ce_sum = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=PAD_ID,
        reduction="sum",
    )
    # Doubly stochastic regularisation (Xu et al. eq. 14): each cell should receive a total
    # attention of ~1 over the caption's valid steps; padded steps do not count.
    maps = sequence_attention(alphas)  # [B, T, L] (multi-head: the head mean)
    att_total = (maps.float() * mask.unsqueeze(-1)).sum(dim=1)  # [B, L]
    dsr_sum = ((1.0 - att_total) ** 2).sum()
    n_pairs = 0
    ica_sum = None
    if compute_ica and ica_targets is not None and ica_valid is not None:
        valid = ica_valid & mask
        n_pairs = int(valid.sum())
        # ica_loss takes multi-head maps as [B, H, T, L].
        heads = alphas.transpose(1, 2) if alphas.dim() == 4 else alphas
        ica_sum = ica_loss(
            heads,
            ica_targets,
            valid,
            mapping=mapping,
            head_reduction=head_reduction,
            reduction="sum",
        )
    return LossTerms(
        ce_sum=ce_sum,
        dsr_sum=dsr_sum,
        ica_sum=ica_sum,
        n_tokens=int(mask.sum()),
        n_dsr=int(maps.shape[0] * maps.shape[-1]),
        n_pairs=n_pairs,
    )


def combine(
    terms: LossTerms,
    alpha_c: float,
    lambda_aux: float,
    norms: tuple[float, float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine loss terms into the training loss.

    Args:
        terms: output of :func:`loss_terms`.
        alpha_c: weight of the doubly-stochastic regularisation.
        lambda_aux: weight of the ICA loss (0 → exactly ``CE + α_c · DSR``).
        norms: ``(tokens, dsr units, pairs)`` normalisers; default the local counts.

    Returns:
        ``(total loss, {"ce", "dsr", "ica"} normalised terms)``.
    """
    n_tok, n_dsr, n_pairs = norms or (terms.n_tokens, terms.n_dsr, terms.n_pairs)
    ce = terms.ce_sum / max(n_tok, 1)
    dsr = terms.dsr_sum / max(n_dsr, 1)
    total = ce + alpha_c * dsr
    parts = {"ce": ce, "dsr": dsr}
    if terms.ica_sum is not None:
        ica = terms.ica_sum / max(n_pairs, 1)
        parts["ica"] = ica
        if lambda_aux != 0.0:
            total = total + lambda_aux * ica
    return total, parts
