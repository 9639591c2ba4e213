"""Validation after every epoch: greedy BLEU-4 (and CIDEr), teacher-forced losses, grounding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from ica_captioning.decoding.greedy import decode_words, greedy_decode
from ica_captioning.losses.training import loss_terms
from ica_captioning.model.captioner import Captioner
from ica_captioning.model.protocol import sequence_attention
from ica_captioning.training.job import TrainJob


def batch_features(
    model: Captioner, batch: Mapping[str, Any], cached: bool, device: torch.device
) -> torch.Tensor:
    """Annotations ``[B, L, D]`` of a batch's captions from its unique images' pixels or cache."""
    pixels = batch["pixels"].to(device, non_blocking=True)
    feats = model.normalize(pixels) if cached else model.encode(pixels)  # [U, L, D]
    return feats[batch["image_inv"].to(device)]  # [B, L, D]


@torch.no_grad()
def validate(
    model: Captioner, job: TrainJob, device: torch.device, amp: torch.dtype | None
) -> dict[str, float]:
    """Validation metrics of the current weights (empty without a validation split).

    Returns:
        ``val_bleu4`` (and ``val_cider`` when early stopping uses it) of greedy captions;
        teacher-forced ``val_ce`` and ``val_ica``; ``val_attention_mass`` — the share
        ``Σ_l α_{t,l} · mask_l`` of attention that a pseudo-labelled word's step puts on its
        object, averaged over (caption, token) pairs; ``val_attention_iou`` — IoU of the cells
        attended above uniform with the mask; ``val_labelled_pairs``.
    """
    val = job.val_set
    if val is None:
        return {}
    model.eval()
    params = job.params
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    bs = params.batch_size
    # Greedy captions of the validation images.
    hyps: dict[int, list[str]] = {}
    rows = np.arange(len(val.image_ids))
    for lo in range(0, len(rows), bs):
        sel = torch.from_numpy(val.image_rows[rows[lo : lo + bs]])
        src = job.source(sel).to(device)
        with autocast:
            feats = model.normalize(src) if job.cached else model.encode(src)
            toks, _, lens = greedy_decode(model.decoder, feats, params.max_decode_len)
        for i, words in zip(rows[lo : lo + bs], decode_words(toks, lens, job.vocabulary["itos"])):
            hyps[int(i)] = [" ".join(words) if words else "<empty>"]
    gts = {k: job.val_references[k] for k in hyps}
    out = {"val_bleu4": float(Bleu(4).compute_score(gts, hyps, verbose=0)[0][3])}
    if params.early_stopping.metric == "cider":
        out["val_cider"] = float(Cider().compute_score(gts, hyps)[0])
    # Teacher-forced losses and attention mass on the labelled pairs.
    sums = {"ce": 0.0, "ica": 0.0, "mass": 0.0, "iou": 0.0, "tok": 0, "pairs": 0}
    for lo in range(0, len(val), bs):
        batch = val.batch(np.arange(lo, min(lo + bs, len(val))))
        batch["pixels"] = job.source(batch["images"])
        with autocast:
            feats = batch_features(model, batch, job.cached, device)
            logits, alphas = model(inputs=batch["inputs"].to(device), features=feats)
        tg, valid = batch["ica_targets"].to(device), batch["ica_valid"].to(device)
        terms = loss_terms(logits, alphas, batch["targets"].to(device), tg, valid, True,
                           params.ica_mapping, params.head_reduction)  # fmt: skip
        # Mass and IoU of the map evaluation reads: the head mean of a multi-head decoder's.
        alphas = sequence_attention(alphas)  # [B, T, L]
        sums["ce"] += float(terms.ce_sum)
        sums["tok"] += terms.n_tokens
        if terms.ica_sum is not None:
            sums["ica"] += float(terms.ica_sum)
        mass = (alphas.float() * tg).sum(-1)  # [B, T]
        sums["mass"] += float(mass[valid].sum())
        # IoU of the cells attended above uniform (α > 1/L) with the mask.
        hot = alphas.float() > 1.0 / alphas.shape[-1]
        inter = (hot & tg).sum(-1).float()
        union = (hot | tg).sum(-1).float().clamp_min(1)
        sums["iou"] += float((inter / union)[valid].sum())
        sums["pairs"] += int(valid.sum())
    pairs = sums["pairs"]
    out["val_ce"] = sums["ce"] / max(sums["tok"], 1)
    out["val_ica"] = sums["ica"] / pairs if pairs else math.nan
    out["val_attention_mass"] = sums["mass"] / pairs if pairs else math.nan
    out["val_attention_iou"] = sums["iou"] / pairs if pairs else math.nan
    out["val_labelled_pairs"] = float(pairs)
    return out
