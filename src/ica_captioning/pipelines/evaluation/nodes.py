"""Nodes of the ``evaluation`` pipeline (thin: the logic is in decoding, metrics and reports)."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ica_captioning.decoding.runner import attention_maps, decode_split
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.metrics.captions import CaptionScorer
from ica_captioning.metrics.chair import caption_mentions, chair
from ica_captioning.metrics.grounding import mention_pairs, pair_scores, summarize
from ica_captioning.metrics.objects import (
    ground_truth_objects,
    object_grids,
    present_classes,
)
from ica_captioning.reports.figures import attention_figure, training_curves_figure
from ica_captioning.reports.tables import VARIANT_LABELS, comparison_table, with_keys

logger = logging.getLogger(__name__)

#: Defaults of ``params:evaluation`` (conf/base/parameters_evaluation.yml documents each key);
#: a key missing from the configuration falls back to these.
DEFAULTS: dict[str, Any] = {
    "split": "test",
    "max_images": None,
    "device": "cpu",
    "batch_size": 100,
    "beam_size": 3,
    "max_len": 20,
    "length_penalty": 0.0,
    "allow_unk": False,
    "progress": False,
    "run_id": None,
    "metrics": {"meteor": True, "spice": True},
    "grounding": {"mass": 0.5, "ground_truth": True},
    "chair": {"ground_truth_from_references": True},
    "figures": {"num_images": 4, "max_words": 12, "seed": 0, "overlay_alpha": 0.6},
}
MATCHING_DEFAULTS: dict[str, Any] = {
    "score_threshold": 0.5,
    "grid_size": 14,
    "cell_threshold": 0.5,
    "extra_lexicon": {},
}


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(dict(defaults))
    for key, value in (given or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _lexicon(matching: Mapping[str, Any] | None) -> Lexicon:
    cfg = _merge(MATCHING_DEFAULTS, matching)
    return Lexicon.from_package(cfg.get("extra_lexicon") or {})


def make_run_id(evaluation: Mapping[str, Any]) -> str:
    """The run id written into every report row: ``evaluation.run_id`` or the UTC time.

    The time has Kedro's version format (``2026-01-31T12.00.00.000Z``), so a report row can be
    matched with the versioned files of the same run.
    """
    given = _merge(DEFAULTS, evaluation).get("run_id")
    if given:
        return str(given)
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H.%M.%S.") + f"{now.microsecond // 1000:03d}Z"


def select_split(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluated images and their reference captions.

    Args:
        images: ``images`` table.
        captions: ``captions`` table.
        encoded_captions: ``encoded_captions`` table (``ids`` for teacher forcing).
        evaluation: ``params:evaluation`` (``split``, ``max_images``).

    Returns:
        ``(evaluation_images, evaluation_references)``; references have ``caption_id``,
        ``image_id``, ``raw``, ``tokens``, ``ids``.

    Raises:
        ValueError: the split has no image, or an image has no reference caption.
    """
    cfg = _merge(DEFAULTS, evaluation)
    split = str(cfg["split"])
    chosen = images[images["split"] == split].sort_values("image_id", kind="stable")
    if cfg["max_images"] is not None:
        chosen = chosen.head(int(cfg["max_images"]))
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


def decode(
    model_bundle: Mapping[str, Any],
    evaluation_images: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Beam-search captions and teacher-forced reference attention of one model.

    Returns:
        ``(generated_captions, reference_attention)`` (see
        :func:`ica_captioning.decoding.runner.decode_split`).
    """
    import torch

    from ica_captioning.model import load_captioner

    cfg = _merge(DEFAULTS, evaluation)
    device = str(cfg["device"])
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"evaluation.device={device} but CUDA is not available here")
    model = load_captioner(model_bundle, device=device)
    start = time.perf_counter()
    generated, references = decode_split(
        model,
        evaluation_images,
        evaluation_references,
        dataset["images_dir"],
        beam_size=int(cfg["beam_size"]),
        max_len=int(cfg["max_len"]),
        length_penalty=float(cfg["length_penalty"]),
        allow_unk=bool(cfg["allow_unk"]),
        batch_size=int(cfg["batch_size"]),
        progress=bool(cfg["progress"]),
    )
    logger.info(
        "decoded %d images (beam %d) and %d references in %.1f s",
        len(generated),
        int(cfg["beam_size"]),
        len(references),
        time.perf_counter() - start,
    )
    return generated, references


def prepare_objects(
    images: pd.DataFrame,
    detections: pd.DataFrame,
    evaluation_images: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Object masks (as grids) and object classes of the evaluated images.

    Returns:
        ``(object_grids, object_truth)``: grids with a ``masks`` column (``pseudo_labels``:
        detections as the matching stage keeps them; ``ground_truth``: ``dataset.instances``);
        ``object_truth`` has one row per image with ``classes`` (CHAIR ground truth),
        ``source`` and the evaluated ``categories`` (same list on every row).
    """
    cfg = _merge(DEFAULTS, evaluation)
    mcfg = _merge(MATCHING_DEFAULTS, matching)
    ids = evaluation_images["image_id"].astype("int64").tolist()
    grid, thr, score = (
        int(mcfg["grid_size"]),
        float(mcfg["cell_threshold"]),
        mcfg["score_threshold"],
    )

    parts = []
    pseudo = object_grids(detections, ids, grid, thr, float(score))
    pseudo["masks"] = "pseudo_labels"
    parts.append(pseudo)

    gt, categories, status = None, [], "disabled by evaluation.grounding.ground_truth"
    if cfg["grounding"]["ground_truth"]:
        gt, categories, status = ground_truth_objects(dataset.get("instances"), images, ids)
    if gt is not None:
        truth_grids = object_grids(gt, ids, grid, thr, 0.0)
        truth_grids["masks"] = "ground_truth"
        parts.append(truth_grids)
        truth = present_classes(gt, ids)
        source = "ground_truth"
    else:
        logger.warning("no ground-truth masks (%s): CHAIR uses detections", status)
        truth = present_classes(detections, ids, float(score))
        categories = sorted(detections["class_name"].dropna().unique().tolist())
        source = "detections"
    if cfg["chair"]["ground_truth_from_references"]:
        # Rohrbach et al. also count objects that the reference captions name as present.
        lexicon = _lexicon(matching)
        for iid, toks in zip(evaluation_references["image_id"], evaluation_references["tokens"]):
            for _, cname, _ in caption_mentions(toks, truth[int(iid)], categories, lexicon):
                truth[int(iid)].add(cname)
    object_truth = pd.DataFrame(
        {
            "image_id": ids,
            "classes": [sorted(truth[i]) for i in ids],
            "source": source,
            "status": status,
            "categories": [list(categories)] * len(ids),
        }
    )
    grids_out = pd.concat(parts, ignore_index=True)
    return grids_out, object_truth


def compute_caption_metrics(
    baseline_generated: pd.DataFrame,
    ica_generated: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    object_truth: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    run_id: str,
) -> pd.DataFrame:
    """Caption metrics and CHAIR of both models (long format; one METEOR process for both).

    Returns:
        ``caption_metrics``: dataset, variant, split, metric, value, run_id, status, reason,
        num_images.
    """
    cfg = _merge(DEFAULTS, evaluation)
    refs: dict[int, list[str]] = {}
    for iid, raw in zip(evaluation_references["image_id"], evaluation_references["raw"]):
        refs.setdefault(int(iid), []).append(str(raw))
    truth = {int(i): set(c) for i, c in zip(object_truth["image_id"], object_truth["classes"])}
    categories = list(object_truth["categories"].iloc[0]) if len(object_truth) else None
    source = str(object_truth["source"].iloc[0]) if len(object_truth) else "none"
    lexicon = _lexicon(matching)
    tables = []
    start = time.perf_counter()
    with CaptionScorer(
        spice=bool(cfg["metrics"]["spice"]), meteor=bool(cfg["metrics"]["meteor"])
    ) as scorer:
        for variant, generated in (("baseline", baseline_generated), ("ica", ica_generated)):
            cands = {int(i): str(c) for i, c in zip(generated["image_id"], generated["caption"])}
            table = scorer.score({k: refs[k] for k in cands}, cands)
            summary, _ = chair(generated, truth, categories, lexicon)
            chair_rows = pd.DataFrame(
                [
                    {
                        "metric": m,
                        "value": summary[m],
                        "status": "ok",
                        "reason": f"objects from {source}; {int(summary['mentions'])} mentions",
                    }
                    for m in ("CHAIR-i", "CHAIR-s")
                ]
            )
            table = pd.concat([table, chair_rows], ignore_index=True)
            table["num_images"] = len(cands)
            tables.append(with_keys(table, dataset["name"], variant, cfg["split"], run_id))
    logger.info("caption metrics of 2 models in %.1f s", time.perf_counter() - start)
    return pd.concat(tables, ignore_index=True)


def _grounding_words(
    generated: pd.DataFrame,
    reference_attention: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    grids: pd.DataFrame,
    lexicon: Lexicon,
    mass: float,
) -> list[tuple[str, str, pd.DataFrame]]:
    """Per-word grounding rows of one model: ``(captions, masks, table)`` per combination."""
    gen = generated.assign(caption_key=generated["image_id"])
    ref = reference_attention.assign(caption_key=reference_attention["caption_id"])
    gen_att = attention_maps(gen, "caption_key")
    ref_att = attention_maps(ref, "caption_key")
    words = []
    for masks in ("pseudo_labels", "ground_truth"):
        g = grids[grids["masks"] == masks]
        if masks == "ground_truth" and g.empty:
            continue
        # Generated captions: the words that name a class with a mask in the image.
        pairs = mention_pairs(gen[["caption_key", "image_id", "tokens"]], g, lexicon)
        words.append(("generated", masks, pair_scores(pairs, gen_att, mass)))
        if masks == "pseudo_labels":
            # Reference captions against the pseudo-labels the ICA loss was trained on.
            pl = pseudo_labels[pseudo_labels["caption_id"].isin(ref["caption_id"])]
            pl = pl.rename(columns={"caption_id": "caption_key"})
            lengths = {k: v.shape[0] for k, v in ref_att.items()}
            inside = pl["token_position"] < pl["caption_key"].map(lengths)
            if (~inside).any():
                logger.info("%d pseudo-labels beyond the encoded caption length", (~inside).sum())
            pairs = pl[inside][["caption_key", "image_id", "token_position", "class_name",
                                "grid_size", "grid"]]  # fmt: skip
        else:
            pairs = mention_pairs(ref[["caption_key", "image_id", "tokens"]], g, lexicon)
        words.append(("reference", masks, pair_scores(pairs, ref_att, mass)))
    return words


def compute_grounding_metrics(
    baseline_generated: pd.DataFrame,
    baseline_reference_attention: pd.DataFrame,
    ica_generated: pd.DataFrame,
    ica_reference_attention: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    grids: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    run_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Grounding metrics of both models.

    Returns:
        ``(grounding_metrics, grounding_words)``: the long report (dataset, variant, split,
        metric, value, run_id, captions, masks, count) and one row per evaluated word.
    """
    cfg = _merge(DEFAULTS, evaluation)
    lexicon = _lexicon(matching)
    mass = float(cfg["grounding"]["mass"])
    reports, all_words = [], []
    for variant, gen, ref in (
        ("baseline", baseline_generated, baseline_reference_attention),
        ("ica", ica_generated, ica_reference_attention),
    ):
        for captions, masks, words in _grounding_words(
            gen, ref, pseudo_labels, grids, lexicon, mass
        ):
            # Summarised per combination so that one without any matched word still gets its
            # rows (value NaN, count 0) instead of disappearing from the report.
            summary = summarize(words).assign(captions=captions, masks=masks)
            reports.append(with_keys(summary, dataset["name"], variant, cfg["split"], run_id))
            all_words.append(words.assign(variant=variant, captions=captions, masks=masks))
    report = pd.concat(reports, ignore_index=True)
    words = pd.concat(all_words, ignore_index=True)
    words["caption_key"] = words["caption_key"].astype("int64")
    return report, words


def build_comparison(
    caption_metrics: pd.DataFrame, grounding_metrics: pd.DataFrame
) -> pd.DataFrame:
    """Table-1 layout: baseline, +ICA and the difference per dataset."""
    return comparison_table(caption_metrics, grounding_metrics)


def _load_image(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def plot_attention(
    baseline_generated: pd.DataFrame,
    ica_generated: pd.DataFrame,
    evaluation_images: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> dict[str, Figure]:
    """Per-word attention of both models on a seeded sample of evaluated images.

    Returns:
        ``{"image_<id>.png": figure}`` for ``evaluation.figures.num_images`` images.
    """
    cfg = _merge(DEFAULTS, evaluation)["figures"]
    ids = evaluation_images["image_id"].astype("int64").to_numpy()
    rng = np.random.default_rng(int(cfg["seed"]))
    chosen = sorted(rng.choice(ids, size=min(int(cfg["num_images"]), len(ids)), replace=False))
    paths = dict(zip(ids, evaluation_images["file_path"]))
    tables = {
        v: g.set_index("image_id")
        for v, g in (("baseline", baseline_generated), ("ica", ica_generated))
    }
    figures = {}
    for iid in chosen:
        image = _load_image(Path(dataset["images_dir"]) / paths[iid])
        rows = []
        for variant, table in tables.items():
            rec = table.loc[iid]
            g = int(rec["grid_size"])
            maps = np.asarray(rec["attention"], dtype=np.float32).reshape(-1, g, g)
            rows.append((VARIANT_LABELS[variant], list(rec["tokens"]), maps))
        figures[f"image_{int(iid)}.png"] = attention_figure(
            image,
            rows,
            max_words=int(cfg["max_words"]),
            title=f"image {int(iid)}",
            overlay_alpha=float(cfg["overlay_alpha"]),
        )
    return figures


def plot_training_curves(baseline_history: pd.DataFrame, ica_history: pd.DataFrame) -> Figure:
    """Training curves of both models (every numeric history column)."""
    return training_curves_figure(
        {VARIANT_LABELS["baseline"]: baseline_history, VARIANT_LABELS["ica"]: ica_history},
        title="Training history",
    )
