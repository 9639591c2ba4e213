"""The evaluation stage without Kedro: the evaluated split and the metric reports of every model.

Each report is a long table (:data:`ica_captioning.reports.tables.REPORT_COLUMNS` first) with
the rows of every variant, in the order of the mapping the variants are given in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone

import pandas as pd

from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.metrics.captions import CaptionScorer
from ica_captioning.metrics.chair import chair
from ica_captioning.metrics.grounding import grounding_words, summarize
from ica_captioning.reports.tables import with_keys

logger = logging.getLogger(__name__)

#: CHAIR rates added to the caption-metric report.
CHAIR_METRICS = ("CHAIR-i", "CHAIR-s")


def resolve_run_id(given: str | None) -> str:
    """The run id of every report row: ``given``, else the current UTC time.

    The time has Kedro's version format (``2026-01-31T12.00.00.000Z``), so a report row can be
    matched with the versioned files of the same run.
    """
    if given:
        return str(given)
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H.%M.%S.") + f"{now.microsecond // 1000:03d}Z"


def select_split(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    split: str,
    max_images: int | None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluated images and their reference captions.

    Args:
        images: ``images`` table.
        captions: ``captions`` table.
        encoded_captions: ``encoded_captions`` table (``ids`` for teacher forcing).
        split: the split evaluated.
        max_images: keep only the first images by ``image_id`` (``None``: all).

    Returns:
        ``(evaluation_images, evaluation_references)``: images sorted by ``image_id``;
        references sorted by ``image_id``, ``caption_id`` with ``caption_id``, ``image_id``,
        ``raw``, ``tokens``, ``ids``.

    Raises:
        ValueError: the split has no image, a caption has no encoded ids, or an image has no
            reference caption.
    """
    chosen = images[images["split"] == split].sort_values("image_id", kind="stable")
    if max_images is not None:
        chosen = chosen.head(int(max_images))
    if chosen.empty:
        raise ValueError(
            f"evaluation.split={split!r}: no image of that split in the images table "
            f"(splits present: {sorted(images['split'].unique().tolist())})"
        )
    chosen = chosen.reset_index(drop=True)
    refs = captions[captions["image_id"].isin(chosen["image_id"])][
        ["caption_id", "image_id", "raw", "tokens"]
    ]
    refs = refs.merge(encoded_captions[["caption_id", "ids"]], on="caption_id", how="left")
    if refs["ids"].isna().any():
        missing = refs.loc[refs["ids"].isna(), "caption_id"].head(5).tolist()
        raise ValueError(f"captions without encoded ids (encoded_captions): {missing}")
    without = sorted(set(chosen["image_id"]) - set(refs["image_id"]))
    if without:
        raise ValueError(f"evaluated images without reference captions: {without[:10]}")
    logger.info("evaluating %d %s images, %d reference captions", len(chosen), split, len(refs))
    return chosen, refs.sort_values(["image_id", "caption_id"]).reset_index(drop=True)


def _chair_rows(summary: Mapping[str, float], source: str) -> pd.DataFrame:
    """The CHAIR rates of :func:`ica_captioning.metrics.chair.chair` as report rows."""
    reason = f"objects from {source}; {int(summary['mentions'])} mentions"
    return pd.DataFrame(
        [
            {"metric": m, "value": summary[m], "status": "ok", "reason": reason}
            for m in CHAIR_METRICS
        ]
    )


def caption_report(
    generated: Mapping[str, pd.DataFrame],
    references: pd.DataFrame,
    object_truth: pd.DataFrame,
    lexicon: Lexicon,
    *,
    dataset: str,
    split: str,
    run_id: str,
    meteor: bool,
    spice: bool,
) -> pd.DataFrame:
    """Caption metrics and CHAIR of every model (one METEOR process for all of them).

    Args:
        generated: variant -> its ``generated_captions`` (``image_id``, ``caption``,
            ``tokens``).
        references: ``evaluation_references`` (``image_id``, ``raw``); every captioned image
            has at least one.
        object_truth: :func:`ica_captioning.metrics.objects.evaluation_objects`'s CHAIR ground
            truth (``image_id``, ``classes``, ``source``, ``categories``).
        lexicon: words -> classes (CHAIR mentions).
        dataset: ``dataset.name`` of the report rows.
        split: the evaluated split.
        run_id: the run id of the report rows.
        meteor: run METEOR (needs java).
        spice: run SPICE (needs java and the CoreNLP jars).

    Returns:
        ``caption_metrics``: dataset, variant, split, metric, value, run_id, status, reason,
        num_images.
    """
    refs: dict[int, list[str]] = {}
    for iid, raw in zip(references["image_id"], references["raw"]):
        refs.setdefault(int(iid), []).append(str(raw))
    truth = {int(i): set(c) for i, c in zip(object_truth["image_id"], object_truth["classes"])}
    categories = list(object_truth["categories"].iloc[0]) if len(object_truth) else None
    source = str(object_truth["source"].iloc[0]) if len(object_truth) else "none"
    tables = []
    start = time.perf_counter()
    with CaptionScorer(spice=spice, meteor=meteor) as scorer:
        for variant, captions in generated.items():
            cands = {int(i): str(c) for i, c in zip(captions["image_id"], captions["caption"])}
            table = scorer.score({k: refs[k] for k in cands}, cands)
            summary, _ = chair(captions, truth, categories, lexicon)
            table = pd.concat([table, _chair_rows(summary, source)], ignore_index=True)
            table["num_images"] = len(cands)
            tables.append(with_keys(table, dataset, variant, split, run_id))
    logger.info(
        "caption metrics of %d models in %.1f s", len(generated), time.perf_counter() - start
    )
    return pd.concat(tables, ignore_index=True)


def grounding_report(
    generated: Mapping[str, pd.DataFrame],
    reference_attention: Mapping[str, pd.DataFrame],
    pseudo_labels: pd.DataFrame,
    object_grids: pd.DataFrame,
    lexicon: Lexicon,
    *,
    mass: float,
    dataset: str,
    split: str,
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grounding metrics of every model.

    Args:
        generated: variant -> its ``generated_captions``.
        reference_attention: variant -> its ``reference_attention`` (same variants).
        pseudo_labels: the matching stage's ``pseudo_labels``.
        object_grids: :func:`ica_captioning.metrics.objects.evaluation_objects`'s grids.
        lexicon: words -> classes.
        mass: attention-mass target of ``attention_iou_mass50``.
        dataset: ``dataset.name`` of the report rows.
        split: the evaluated split.
        run_id: the run id of the report rows.

    Returns:
        ``(grounding_metrics, grounding_words)``: the long report (dataset, variant, split,
        metric, value, run_id, captions, masks, count) and one row per evaluated word.
    """
    reports, all_words = [], []
    for variant, gen in generated.items():
        combos = grounding_words(
            gen, reference_attention[variant], pseudo_labels, object_grids, lexicon, mass
        )
        for captions, masks, words in combos:
            # Summarised per combination so that one without any matched word still gets its
            # rows (value NaN, count 0) instead of disappearing from the report.
            summary = summarize(words).assign(captions=captions, masks=masks)
            reports.append(with_keys(summary, dataset, variant, split, run_id))
            all_words.append(words.assign(variant=variant, captions=captions, masks=masks))
    report = pd.concat(reports, ignore_index=True)
    words = pd.concat(all_words, ignore_index=True)
    words["caption_key"] = words["caption_key"].astype("int64")
    return report, words
