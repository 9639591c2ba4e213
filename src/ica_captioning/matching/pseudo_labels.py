"""Build ``pseudo_labels`` and ``matching_stats`` from captions and detections.

For each caption: the tokens that name a class detected in its image (score ``>=``
``score_threshold``), the union of all instances of that class (the paper merges instances),
reduced to the ``G × G`` attention grid (:mod:`ica_captioning.matching.grid`). Grids are computed
once per (image, class) pair and shared by the ~5 captions of an image.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Set
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ica_captioning.data.tables import require_columns
from ica_captioning.data.text import as_tokens
from ica_captioning.detection.rle import union_rle
from ica_captioning.matching.grid import (
    binarize_fractions,
    pack_grids,
    rle_cell_fractions,
    rle_cell_fractions_batch,
)
from ica_captioning.matching.lexicon import Lexicon

logger = logging.getLogger(__name__)

CAPTION_COLUMNS = ["caption_id", "image_id", "tokens"]
DETECTION_COLUMNS = ["image_id", "class_name", "score", "rle_counts", "height", "width", "status"]
PSEUDO_LABEL_COLUMNS = [
    "caption_id",
    "image_id",
    "token_position",
    "class_name",
    "grid_size",
    "grid",
]


class MatchingInputError(ValueError):
    """A table given to matching lacks columns or holds unusable values."""


class NoPseudoLabelsError(ValueError):
    """Matching labelled no caption token (the message gives the reason from the statistics)."""


def _token_list(tokens: Any, caption_id: Any) -> list[str]:
    """The caption's words as a list; a plain string (an untokenised caption) is an error."""
    if isinstance(tokens, (np.ndarray, list, tuple)):
        return as_tokens(tokens)
    raise MatchingInputError(
        f"captions: caption_id {caption_id} has tokens of type {type(tokens).__name__}, "
        "expected a list of strings"
    )


def find_mentions(
    captions: pd.DataFrame, lexicon: Lexicon, present: Mapping[int, Set[str]]
) -> pd.DataFrame:
    """Every class mention of every caption, resolved against the image's detected classes.

    Args:
        captions: ``caption_id``, ``image_id``, ``tokens``.
        lexicon: the lexicon.
        present: image id -> classes detected in it.

    Returns:
        One row per mention: ``caption_id``, ``image_id``, ``token_position``, ``class_name``
        (the matched class, or None), ``mentioned`` (first candidate class, for counting misses).
    """
    cap_ids, img_ids, positions, matched, mentioned = [], [], [], [], []
    empty: Set[str] = frozenset()
    for cid, iid, toks in zip(captions["caption_id"], captions["image_id"], captions["tokens"]):
        found = lexicon.mentions(_token_list(toks, cid))
        if not found:
            continue
        classes = present.get(iid, empty)
        for pos, cands in found:
            cap_ids.append(cid)
            img_ids.append(iid)
            positions.append(pos)
            mentioned.append(cands[0])
            matched.append(next((c for c in cands if c in classes), None))
    return pd.DataFrame(
        {
            "caption_id": pd.Series(cap_ids, dtype="int64"),
            "image_id": pd.Series(img_ids, dtype="int64"),
            "token_position": pd.Series(positions, dtype="int64"),
            "class_name": pd.Series(matched, dtype=object),
            "mentioned": pd.Series(mentioned, dtype=object),
        }
    )


def class_grids(
    detections: pd.DataFrame,
    pairs: pd.DataFrame,
    grid_size: int,
    cell_threshold: float,
    chunk: int = 4096,
    progress: bool = False,
) -> pd.DataFrame:
    """Binary grid of the union of all instances of each (image, class) pair.

    Args:
        detections: kept detections (``image_id``, ``class_name``, ``rle_counts``,
            ``height``, ``width``).
        pairs: unique ``image_id``, ``class_name`` pairs to compute.
        grid_size: ``G``.
        cell_threshold: cell on when its area fraction is ``>=`` this.
        chunk: pairs binarised together (bounds memory at ``chunk × G² × 8`` bytes).
        progress: show a tqdm bar.

    Returns:
        ``pairs`` with ``grid`` (packed bytes, None for an empty mask), ``fallback`` (best-cell
        rule used), ``empty`` (the union covers no pixel).

    Raises:
        MatchingInputError: a mask is corrupt (names image and class).
    """
    dets = detections.sort_values(["image_id", "class_name"], kind="stable")
    # Row ranges of each (image, class) group in the sorted table: one pass, no groupby objects.
    img = dets["image_id"].to_numpy()
    cls = dets["class_name"].to_numpy(dtype=object)
    new = np.r_[True, (img[1:] != img[:-1]) | (cls[1:] != cls[:-1])] if len(dets) else []
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(dets)]
    index = {(int(img[s]), cls[s]): (s, e) for s, e in zip(starts.tolist(), ends.tolist())}
    counts = dets["rle_counts"].to_numpy()
    heights = dets["height"].to_numpy()
    widths = dets["width"].to_numpy()
    n = len(pairs)
    grids: list[bytes | None] = [None] * n
    fallback = np.zeros(n, dtype=bool)
    empty = np.zeros(n, dtype=bool)
    items = list(zip(pairs["image_id"].tolist(), pairs["class_name"].tolist()))
    bar = tqdm(total=n, unit="grid", desc="matching grids", disable=not progress)
    for c0 in range(0, n, chunk):
        block = items[c0 : c0 + chunk]
        unions: list[str] = []
        sizes: list[tuple[int, int]] = []
        for iid, cname in block:
            s, e = index[(iid, cname)]
            h, w = int(heights[s]), int(widths[s])
            try:
                unions.append(union_rle(list(counts[s:e]), h, w))
            except (ValueError, TypeError) as err:
                raise MatchingInputError(
                    f"detections: corrupt mask of class '{cname}' in image {iid}: {err}"
                ) from err
            sizes.append((h, w))
        frac = np.zeros((len(block), grid_size, grid_size))  # [B, G, G]
        # One vectorised reduction per mask size (COCO has a few hundred sizes).
        by_size: dict[tuple[int, int], list[int]] = {}
        for j, hw in enumerate(sizes):
            by_size.setdefault(hw, []).append(j)
        for (h, w), members in by_size.items():
            try:
                frac[members] = rle_cell_fractions_batch(
                    [unions[j] for j in members], h, w, grid_size
                )
            except (ValueError, UnicodeEncodeError) as err:
                # Find the culprit for the message (rare path: corrupt input).
                for j in members:
                    try:
                        rle_cell_fractions(unions[j], h, w, grid_size)
                    except (ValueError, UnicodeEncodeError) as one:
                        iid, cname = block[j]
                        raise MatchingInputError(
                            f"detections: corrupt mask of class '{cname}' in image {iid}: {one}"
                        ) from err
                raise
        binary, fb = binarize_fractions(frac, cell_threshold)
        is_empty = frac.reshape(len(block), -1).max(axis=1) <= 0
        packed = pack_grids(binary)
        for j in range(len(block)):
            grids[c0 + j] = None if is_empty[j] else packed[j]
        fallback[c0 : c0 + len(block)] = fb
        empty[c0 : c0 + len(block)] = is_empty
        bar.update(len(block))
    bar.close()
    out = pairs[["image_id", "class_name"]].reset_index(drop=True).copy()
    out["grid"] = pd.Series(grids, dtype=object)
    out["fallback"] = fallback
    out["empty"] = empty
    return out


def build_pseudo_labels(
    captions: pd.DataFrame,
    detections: pd.DataFrame,
    lexicon: Lexicon,
    *,
    score_threshold: float,
    grid_size: int,
    cell_threshold: float,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pseudo-attention labels for every caption, and statistics about them.

    Args:
        captions: the ``captions`` table (``caption_id``, ``image_id``, ``tokens``; ``split``
            is carried over when present).
        detections: the ``detections`` table.
        lexicon: words -> classes.
        score_threshold: detections with a lower score are ignored.
        grid_size: ``G`` of the attention grid.
        cell_threshold: area fraction from which a cell is on.
        progress: show a progress bar for the grids.

    Returns:
        ``pseudo_labels`` (docs/contracts.md, plus ``split`` when captions have it) and
        ``matching_stats`` (long format ``statistic``, ``key``, ``value``).
    """
    require_columns(captions, "captions", CAPTION_COLUMNS, error=MatchingInputError)
    require_columns(detections, "detections", DETECTION_COLUMNS, error=MatchingInputError)
    if not 0.0 < float(cell_threshold) <= 1.0:
        raise MatchingInputError(f"matching.cell_threshold={cell_threshold} must be in (0, 1]")
    if int(grid_size) < 1:
        raise MatchingInputError(f"matching.grid_size={grid_size} must be >= 1")
    bad_status = set(detections["status"].dropna().unique()) - {"ok", "no_detections"}
    if bad_status:
        raise MatchingInputError(f"detections: unknown status value(s) {sorted(bad_status)}")
    kept = detections[
        (detections["status"] == "ok") & (detections["score"] >= float(score_threshold))
    ]
    if kept["rle_counts"].isna().any() or kept["class_name"].isna().any():
        row = kept[kept["rle_counts"].isna() | kept["class_name"].isna()].iloc[0]
        raise MatchingInputError(
            f"detections: image {row['image_id']} has an 'ok' row without class or mask"
        )
    present: dict[int, set[str]] = {}
    unique_pairs = kept[["image_id", "class_name"]].drop_duplicates()
    for iid, cname in zip(unique_pairs["image_id"].tolist(), unique_pairs["class_name"].tolist()):
        present.setdefault(iid, set()).add(cname)
    vocabulary = set(detections["class_name"].dropna().unique())
    mentions = find_mentions(captions, lexicon.with_classes(vocabulary), present)
    matched = mentions[mentions["class_name"].notna()]
    pairs = matched[["image_id", "class_name"]].drop_duplicates(ignore_index=True)
    grids = class_grids(kept, pairs, int(grid_size), float(cell_threshold), progress=progress)
    labels = matched.merge(grids, on=["image_id", "class_name"], how="left", validate="m:1")
    usable = labels["grid"].notna()
    labels_out = labels[usable].reset_index(drop=True)
    pseudo = pd.DataFrame(
        {
            "caption_id": labels_out["caption_id"].astype("int64"),
            "image_id": labels_out["image_id"].astype("int64"),
            "token_position": labels_out["token_position"].astype("int64"),
            "class_name": labels_out["class_name"].astype(object),
            "grid_size": np.full(len(labels_out), int(grid_size), dtype=np.int64),
            "grid": labels_out["grid"].astype(object),
        },
        columns=PSEUDO_LABEL_COLUMNS,
    )
    if "split" in captions.columns:
        split = captions.drop_duplicates("caption_id").set_index("caption_id")["split"]
        pseudo["split"] = pseudo["caption_id"].map(split).astype(object)
    stats = _statistics(captions, detections, kept, mentions, pseudo, grids, labels, vocabulary)
    return pseudo, stats


def _statistics(
    captions: pd.DataFrame,
    detections: pd.DataFrame,
    kept: pd.DataFrame,
    mentions: pd.DataFrame,
    pseudo: pd.DataFrame,
    grids: pd.DataFrame,
    labels: pd.DataFrame,
    vocabulary: set[str],
) -> pd.DataFrame:
    """Long-format statistics (``statistic``, ``key``, ``value``)."""
    rows: list[tuple[str, str, float]] = []
    n_captions = len(captions)
    per_caption_objects = pseudo.groupby("caption_id")["class_name"].nunique()
    per_caption_tokens = pseudo.groupby("caption_id").size()
    unmatched = mentions[mentions["class_name"].isna()]
    in_vocab = unmatched["mentioned"].isin(vocabulary)
    ok_instances = int((detections["status"] == "ok").sum())
    processed = set(detections["image_id"].unique().tolist())
    not_processed = int((~captions["image_id"].isin(processed)).sum())
    denom = max(n_captions, 1)
    rows += [
        ("captions", "", float(n_captions)),
        ("captions_with_match", "", float(len(per_caption_objects))),
        # Captions naming at least one class the lexicon (or the detector's names) knows.
        ("captions_with_mention", "", float(mentions["caption_id"].nunique())),
        ("share_captions_with_match", "", len(per_caption_objects) / denom),
        # The paper's "critical objects": distinct detected classes a caption names.
        ("mean_critical_objects_per_caption", "", float(per_caption_objects.sum()) / denom),
        (
            "mean_critical_objects_per_matched_caption",
            "",
            float(per_caption_objects.mean()) if len(per_caption_objects) else 0.0,
        ),
        ("mean_labelled_tokens_per_caption", "", float(per_caption_tokens.sum()) / denom),
        ("mentions", "", float(len(mentions))),
        ("matched_mentions", "", float(len(pseudo))),
        # A class the detector can output, named in the caption, but not found in this image.
        ("unmatched_mentions", "", float(in_vocab.sum())),
        # Named classes the detector never output anywhere (e.g. "orange" the colour on a
        # dataset without oranges): not a detector miss, reported apart.
        ("mentions_of_classes_never_detected", "", float((~in_vocab).sum())),
        ("empty_mask_mentions", "", float(labels["grid"].isna().sum())),
        ("grids", "", float(len(grids))),
        ("grids_best_cell_fallback", "", float(grids["fallback"].sum())),
        ("grids_empty_mask", "", float(grids["empty"].sum())),
        ("captions_image_not_in_detections", "", float(not_processed)),
        ("images_with_detections", "", float(kept["image_id"].nunique())),
        ("detected_instances", "", float(len(kept))),
        ("instances_below_score_threshold", "", float(ok_instances - len(kept))),
    ]
    rows += [("class_matches", k, float(v)) for k, v in Counter(pseudo["class_name"]).items()]
    rows += [
        ("class_unmatched_mentions", k, float(v))
        for k, v in Counter(unmatched.loc[in_vocab, "mentioned"]).items()
    ]
    rows += [
        ("class_mentions_never_detected", k, float(v))
        for k, v in Counter(unmatched.loc[~in_vocab, "mentioned"]).items()
    ]
    rows += [
        ("class_detected_instances", k, float(v)) for k, v in Counter(kept["class_name"]).items()
    ]
    if not_processed:
        logger.warning(
            "%d captions belong to images absent from the detections table (not processed "
            "or quarantined); they get no pseudo-labels",
            not_processed,
        )
    return pd.DataFrame(rows, columns=["statistic", "key", "value"])


def _few_classes(stats: pd.DataFrame, statistic: str, k: int = 5) -> str:
    """The ``k`` classes with the highest ``statistic`` (``name ×count``), "…" when more."""
    rows = stats[stats["statistic"] == statistic].sort_values(
        ["value", "key"], ascending=[False, True]
    )
    items = [f"{key} ×{value:.0f}" for key, value in zip(rows["key"], rows["value"])]
    return ", ".join(items[:k]) + (" …" if len(items) > k else "")


def matching_diagnosis(stats: pd.DataFrame, score_threshold: float) -> list[str]:
    """Why captions got no pseudo-label, read from ``matching_stats`` (largest causes first).

    Args:
        stats: the ``matching_stats`` table of :func:`build_pseudo_labels`.
        score_threshold: ``matching.score_threshold`` (named in the message).

    Returns:
        One sentence per cause that applies (empty when every caption got a label).
    """
    value = stats[stats["key"] == ""].set_index("statistic")["value"]
    n = int(value["captions"])
    if n == 0:
        return ["the captions table is empty"]
    reasons: list[str] = []
    absent = int(value["captions_image_not_in_detections"])
    if absent:
        reasons.append(
            f"{absent} of {n} captions belong to images absent from the detections table "
            "(not processed, or quarantined)"
        )
    if value["detected_instances"] == 0:
        below = int(value["instances_below_score_threshold"])
        reasons.append(
            f"no detection has score >= matching.score_threshold={score_threshold:g} "
            f"(all {below} detected instances are below it)"
            if below
            else "the detections table holds no instance at all (only no_detections rows)"
        )
        return reasons
    detected = _few_classes(stats, "class_detected_instances")
    silent = n - int(value["captions_with_mention"])
    if silent:
        reasons.append(
            f"{silent} of {n} captions name no class the lexicon knows (no caption word in the "
            f"lexicon for the detected classes {detected}; add words with "
            "matching.extra_lexicon)"
        )
    never = int(value["mentions_of_classes_never_detected"])
    if never:
        reasons.append(
            f"{never} of {int(value['mentions'])} mentions name classes never detected above "
            f"the threshold ({_few_classes(stats, 'class_mentions_never_detected')}); the "
            f"detected classes are {detected}"
        )
    unmatched = int(value["unmatched_mentions"])
    if unmatched:
        reasons.append(
            f"{unmatched} mentions name a class detected elsewhere but not in the caption's "
            "own image"
        )
    empty = int(value["empty_mask_mentions"])
    if empty:
        reasons.append(f"{empty} mentions matched an object whose mask covers no pixel")
    return reasons


def check_pseudo_labels(
    stats: pd.DataFrame,
    *,
    score_threshold: float,
    allow_empty: bool,
    min_labelled_fraction: float,
) -> None:
    """Zero is an error, not a result: stop when no token got a pseudo-label, warn when few did.

    Args:
        stats: the ``matching_stats`` table of :func:`build_pseudo_labels`.
        score_threshold: ``matching.score_threshold`` (for the message).
        allow_empty: ``matching.allow_empty``: log a warning instead of stopping when no
            caption token got a pseudo-label.
        min_labelled_fraction: ``matching.min_labelled_fraction``: warn when a smaller share
            of the captions gets at least one pseudo-label.

    Raises:
        NoPseudoLabelsError: no caption token got a pseudo-label and ``allow_empty`` is false.
    """
    value = stats[stats["key"] == ""].set_index("statistic")["value"]
    n, labelled = int(value["captions"]), int(value["captions_with_match"])
    reasons = "; ".join(matching_diagnosis(stats, score_threshold))
    if value["matched_mentions"] == 0:
        message = (
            f"matching: no caption token got a pseudo-label (0 of {n} captions): {reasons}. "
            "The ICA loss would have nothing to train on"
        )
        if not allow_empty:
            raise NoPseudoLabelsError(
                f"{message}; set matching.allow_empty=true to write the empty tables anyway."
            )
        logger.warning("%s (matching.allow_empty is true: writing empty pseudo_labels).", message)
        return
    share = labelled / max(n, 1)
    if share < min_labelled_fraction:
        logger.warning(
            "matching: only %.1f%% of the captions (%d of %d) got at least one pseudo-label, "
            "below matching.min_labelled_fraction=%g: %s",
            100.0 * share,
            labelled,
            n,
            min_labelled_fraction,
            reasons,
        )
