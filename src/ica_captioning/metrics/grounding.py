"""Grounding metrics: does a word's attention map land on the object the word names?

For a word naming an object present in the image, with attention ``alpha`` (``[L]``, sums to 1
over the ``L = G²`` cells of the encoder grid) and the object's binary ``G × G`` mask ``m``
(all instances of the class merged, the paper's pseudo-label construction):

* **attention correctness** (Liu et al. 2017, "Attention correctness in neural image captioning"):
  ``AC = Σ_l alpha_l m_l / Σ_l alpha_l``, the attention mass inside the mask. Uniform attention
  scores ``|m| / L`` (reported as ``attention_correctness_chance``).
* **top-k IoU**: the ``k = |m|`` most attended cells (as many as the mask has; ties broken by cell
  order) against the mask. 1 iff the mask is exactly the top-``|m|`` cells.
* **mass-50 IoU**: the fewest most-attended cells holding at least 50 % of the attention mass
  against the mask (how concentrated the attention is, and where).

These are computed for generated captions (beam-search attention) and reference captions
(teacher-forced attention), against the pseudo-labels (detector masks, what the ICA loss trains
on) and against ground-truth instance masks where the dataset has them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ica_captioning.data.text import as_tokens
from ica_captioning.matching.grid import unpack_grid
from ica_captioning.matching.lexicon import Lexicon, default_lexicon
from ica_captioning.metrics.objects import GROUND_TRUTH, PSEUDO_LABELS

logger = logging.getLogger(__name__)

#: Caption sources scored: beam-search captions and teacher-forced reference captions.
GENERATED, REFERENCE = "generated", "reference"

#: Per-word metric columns, in report order.
WORD_METRICS = (
    "attention_correctness",
    "attention_correctness_chance",
    "attention_iou_topk",
    "attention_iou_mass50",
)


def _check(alphas: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.asarray(alphas, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    if alphas.ndim != 2 or alphas.shape != masks.shape:
        raise ValueError(
            f"alphas and masks must both be [N, L]; got {alphas.shape} and {masks.shape}"
        )
    if (alphas < 0).any():
        raise ValueError("attention weights must be non-negative")
    empty = ~masks.any(axis=1)
    if empty.any():
        raise ValueError(f"{int(empty.sum())} mask(s) have no cell; grounding needs an object")
    return alphas, masks


def attention_correctness(alphas: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Attention mass inside the mask.

    Args:
        alphas: ``[N, L]`` non-negative attention (normalised here, so sums need not be 1).
        masks: ``[N, L]`` binary masks, each with at least one cell.

    Returns:
        ``[N]`` values in ``[0, 1]``.
    """
    alphas, masks = _check(alphas, masks)
    total = alphas.sum(axis=1)
    inside = (alphas * masks).sum(axis=1)
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def _iou(selected: np.ndarray, masks: np.ndarray) -> np.ndarray:
    inter = (selected & masks).sum(axis=1)
    union = (selected | masks).sum(axis=1)
    return inter / union


def _descending_order(alphas: np.ndarray) -> np.ndarray:
    """``[N, L]`` cell indices by decreasing attention (stable: ties keep cell order)."""
    return np.argsort(-alphas, axis=1, kind="stable")


def topk_iou(alphas: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """IoU between the ``|mask|`` most attended cells and the mask.

    Args:
        alphas: ``[N, L]`` attention.
        masks: ``[N, L]`` binary masks.

    Returns:
        ``[N]`` IoU values.
    """
    alphas, masks = _check(alphas, masks)
    n, num_cells = alphas.shape
    order = _descending_order(alphas)  # [N, L]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_cells)[None].repeat(n, 0), axis=1)
    selected = rank < masks.sum(axis=1, keepdims=True)  # [N, L]
    return _iou(selected, masks)


def mass_iou(alphas: np.ndarray, masks: np.ndarray, mass: float) -> np.ndarray:
    """IoU between the fewest top-attended cells holding ``>= mass`` of attention and the mask.

    Args:
        alphas: ``[N, L]`` attention.
        masks: ``[N, L]`` binary masks.
        mass: fraction of the attention mass to cover, in ``(0, 1]``.

    Returns:
        ``[N]`` IoU values.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    alphas, masks = _check(alphas, masks)
    total = alphas.sum(axis=1, keepdims=True)
    probs = np.divide(
        alphas, total, out=np.full_like(alphas, 1.0 / alphas.shape[1]), where=total > 0
    )
    order = _descending_order(probs)
    sorted_p = np.take_along_axis(probs, order, axis=1)
    before = np.cumsum(sorted_p, axis=1) - sorted_p  # mass strictly before each sorted cell
    # A cell is taken while the mass gathered before it is still short of the target. The
    # tolerance keeps float round-off from adding a cell when the target is reached exactly.
    take_sorted = before < mass - 1e-12
    selected = np.zeros_like(masks)
    np.put_along_axis(selected, order, take_sorted, axis=1)
    return _iou(selected, masks)


def word_scores(alphas: np.ndarray, masks: np.ndarray, mass: float) -> pd.DataFrame:
    """All per-word grounding metrics.

    Args:
        alphas: ``[N, L]`` attention maps of the words.
        masks: ``[N, L]`` binary masks of the objects they name.
        mass: attention-mass target of ``attention_iou_mass50``.

    Returns:
        ``N`` rows with the columns of :data:`WORD_METRICS` and ``mask_cells``.
    """
    alphas, masks = _check(alphas, masks)
    return pd.DataFrame(
        {
            "attention_correctness": attention_correctness(alphas, masks),
            "attention_correctness_chance": masks.sum(axis=1) / masks.shape[1],
            "attention_iou_topk": topk_iou(alphas, masks),
            "attention_iou_mass50": mass_iou(alphas, masks, mass),
            "mask_cells": masks.sum(axis=1).astype(np.int64),
        }
    )


def mention_pairs(
    captions: pd.DataFrame,
    object_grids: pd.DataFrame,
    lexicon: Lexicon | None = None,
) -> pd.DataFrame:
    """The words of each caption that name an object of its image that has a mask.

    Args:
        captions: ``caption_key``, ``image_id``, ``tokens`` (list of words).
        object_grids: ``image_id``, ``class_name``, ``grid_size``, ``grid`` (packed bytes) —
            one row per object class present in the image.
        lexicon: words -> classes (default: the package lexicon).

    Returns:
        ``caption_key``, ``image_id``, ``token_position``, ``class_name``, ``grid_size``,
        ``grid``: one row per mention of a present class.
    """
    lexicon = lexicon or default_lexicon()
    present: dict[int, set[str]] = {}
    for iid, cname in zip(object_grids["image_id"], object_grids["class_name"]):
        present.setdefault(int(iid), set()).add(cname)
    rows: list[tuple[Any, int, int, str]] = []
    for key, iid, toks in zip(captions["caption_key"], captions["image_id"], captions["tokens"]):
        classes = present.get(int(iid))
        if not classes:
            continue
        rows += [(key, int(iid), pos, c) for pos, c in lexicon.match(as_tokens(toks), classes)]
    pairs = pd.DataFrame(rows, columns=["caption_key", "image_id", "token_position", "class_name"])
    grids = object_grids[["image_id", "class_name", "grid_size", "grid"]].drop_duplicates(
        ["image_id", "class_name"]
    )
    return pairs.merge(grids, on=["image_id", "class_name"], how="left", validate="m:1")


def pair_scores(
    pairs: pd.DataFrame,
    attention: Mapping[Any, np.ndarray],
    mass: float = 0.5,
) -> pd.DataFrame:
    """Per-word grounding metrics of mention pairs.

    Args:
        pairs: ``caption_key``, ``token_position``, ``grid_size``, ``grid`` (packed ``G × G``).
        attention: caption key -> ``[n, L]`` attention maps of its ``n`` words.
        mass: see :func:`mass_iou`.

    Returns:
        ``pairs`` (without ``grid``) plus the :data:`WORD_METRICS` columns and ``mask_cells``.

    Raises:
        ValueError: a pair points past its caption, or the mask grid size does not match ``L``.
    """
    out = pairs.drop(columns=["grid"]).reset_index(drop=True)
    if pairs.empty:
        for col in (*WORD_METRICS, "mask_cells"):
            out[col] = pd.Series(dtype="int64" if col == "mask_cells" else "float64")
        return out
    alphas, masks = [], []
    for key, pos, g, grid in zip(
        pairs["caption_key"], pairs["token_position"], pairs["grid_size"], pairs["grid"]
    ):
        maps = np.asarray(attention[key])
        if not 0 <= int(pos) < maps.shape[0]:
            raise ValueError(
                f"caption {key}: token_position {pos} but only {maps.shape[0]} attention maps"
            )
        if int(g) * int(g) != maps.shape[1]:
            raise ValueError(
                f"caption {key}: mask grid {g}x{g} does not match {maps.shape[1]} attention cells"
            )
        alphas.append(maps[int(pos)])
        masks.append(unpack_grid(grid, int(g)).reshape(-1))
    scores = word_scores(np.stack(alphas), np.stack(masks), mass)  # [N] each
    return pd.concat([out, scores], axis=1)


def summarize(word_table: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean of each per-word metric (long format), with the number of words.

    Args:
        word_table: output of :func:`pair_scores` plus any grouping columns.
        by: grouping columns kept in the output.

    Returns:
        ``*by``, ``metric``, ``value``, ``count`` (NaN value and count 0 when no word matched).
    """
    by = list(by)
    if word_table.empty:
        keys: Iterable[tuple] = [()]
        return pd.DataFrame(
            [
                {**dict(zip(by, k)), "metric": m, "value": np.nan, "count": 0}
                for k in keys
                for m in WORD_METRICS
            ],
            columns=[*by, "metric", "value", "count"],
        )
    long = word_table.melt(
        id_vars=by, value_vars=list(WORD_METRICS), var_name="metric", value_name="value"
    )
    grouped = long.groupby([*by, "metric"], sort=False)["value"]
    out = grouped.agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "value", "size": "count"})


def grounding_words(
    generated: pd.DataFrame,
    reference_attention: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    object_grids: pd.DataFrame,
    lexicon: Lexicon,
    mass: float,
) -> list[tuple[str, str, pd.DataFrame]]:
    """Per-word grounding metrics of one model, for every (captions, masks) combination.

    Generated captions are scored on the words that name a class with a mask in the image.
    Reference captions are scored against the pseudo-labels the ICA loss was trained on (the
    ``pseudo_labels`` rows of their captions) and, where there are ground-truth masks, on the
    words that name a ground-truth class.

    Args:
        generated: ``image_id``, ``tokens``, ``grid_size``, ``attention`` (flattened
            ``[n * L]`` beam-search maps) per generated caption.
        reference_attention: ``caption_id``, ``image_id``, ``tokens``, ``grid_size``,
            ``attention`` (flattened teacher-forced maps) per reference caption.
        pseudo_labels: the matching stage's ``pseudo_labels`` table.
        object_grids: :func:`ica_captioning.metrics.objects.evaluation_objects` grids (with a
            ``masks`` column); ground truth is skipped when it has no such row.
        lexicon: words -> classes.
        mass: attention-mass target of ``attention_iou_mass50``.

    Returns:
        ``[(captions, masks, words), ...]``: :data:`GENERATED` / :data:`REFERENCE`,
        :data:`PSEUDO_LABELS` / :data:`GROUND_TRUTH`, and the :func:`pair_scores` table keyed by
        ``caption_key`` (the image id of a generated caption, the caption id of a reference).
    """
    gen = generated.assign(caption_key=generated["image_id"])
    ref = reference_attention.assign(caption_key=reference_attention["caption_id"])
    gen_att = attention_maps(gen, "caption_key")
    ref_att = attention_maps(ref, "caption_key")
    words = []
    for masks in (PSEUDO_LABELS, GROUND_TRUTH):
        grids = object_grids[object_grids["masks"] == masks]
        if masks == GROUND_TRUTH and grids.empty:
            continue
        pairs = mention_pairs(gen[["caption_key", "image_id", "tokens"]], grids, lexicon)
        words.append((GENERATED, masks, pair_scores(pairs, gen_att, mass)))
        if masks == PSEUDO_LABELS:
            pairs = _reference_pseudo_labels(pseudo_labels, ref_att)
        else:
            pairs = mention_pairs(ref[["caption_key", "image_id", "tokens"]], grids, lexicon)
        words.append((REFERENCE, masks, pair_scores(pairs, ref_att, mass)))
    return words


def _reference_pseudo_labels(
    pseudo_labels: pd.DataFrame, attention: Mapping[Any, np.ndarray]
) -> pd.DataFrame:
    """The pseudo-labels of the reference captions in ``attention``, as mention pairs.

    A pseudo-label past the end of its encoded caption (cut at ``max_caption_len``) has no
    attention map and is left out.
    """
    pl = pseudo_labels[pseudo_labels["caption_id"].isin(list(attention))]
    pl = pl.rename(columns={"caption_id": "caption_key"})
    lengths = {k: v.shape[0] for k, v in attention.items()}
    inside = pl["token_position"] < pl["caption_key"].map(lengths)
    if (~inside).any():
        logger.info("%d pseudo-labels beyond the encoded caption length", (~inside).sum())
    return pl[inside][
        ["caption_key", "image_id", "token_position", "class_name", "grid_size", "grid"]
    ]


def attention_maps(table: pd.DataFrame, key: str) -> dict[Any, np.ndarray]:
    """``key`` -> ``[n, L]`` attention maps from a flattened ``attention`` column."""
    out = {}
    for k, att, g in zip(table[key], table["attention"], table["grid_size"]):
        cells = int(g) * int(g)
        out[k] = np.asarray(att, dtype=np.float32).reshape(-1, cells)
    return out
