"""Nodes of the ``evaluation`` pipeline: parse the parameters, call decoding, metrics, reports.

The logic lives in :mod:`ica_captioning.reports.evaluation` (split, caption and grounding
reports), :mod:`ica_captioning.metrics.objects` (object masks and CHAIR ground truth) and
:mod:`ica_captioning.reports.figures`; every default is in conf/base/parameters_*.yml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ica_captioning.decoding.runner import GENERATED_COLUMNS, REFERENCE_COLUMNS, decode_split
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.metrics.objects import evaluation_objects
from ica_captioning.model import load_captioner
from ica_captioning.params import DatasetParams, EvaluationParams, MatchingParams
from ica_captioning.reports import evaluation as report
from ica_captioning.reports.figures import (
    attention_figures,
    head_attention_figures,
    training_curves_figure,
)
from ica_captioning.reports.tables import comparison_table
from ica_captioning.variants import LABELS

logger = logging.getLogger(__name__)

#: Separator of the per-variant keyword inputs of the report nodes: ``generated__<variant>``.
SEP = "__"


def variant_inputs(variants: Sequence[str], **datasets: str) -> dict[str, str]:
    """Keyword inputs of a report node: ``{"<kind>__<variant>": "<variant>.<dataset>"}``.

    Args:
        variants: the evaluated variants, in report order.
        datasets: kind -> dataset of each variant (``generated="generated_captions"``).
    """
    return {f"{kind}{SEP}{v}": f"{v}.{name}" for v in variants for kind, name in datasets.items()}


def by_variant(tables: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """``{variant: table}`` of one kind of :func:`variant_inputs`, in their order.

    A variant whose table is ``None`` or empty has no model (:func:`decode_if_trained`, an
    optional training history) and is left out.
    """
    out = {}
    for key, table in tables.items():
        prefix, _, variant = key.partition(SEP)
        if prefix != kind:
            continue
        if table is None or (isinstance(table, pd.DataFrame) and table.empty):
            logger.info("%s: no %s (model not trained), so no rows for it", variant, kind)
            continue
        out[variant] = table
    return out


def _lexicon(matching: MatchingParams) -> Lexicon:
    """The package lexicon with ``matching.extra_lexicon`` (the words the matching stage used)."""
    return Lexicon.from_package(matching.extra_lexicon)


def make_run_id(evaluation: Mapping[str, Any]) -> str:
    """The run id written into every report row: ``evaluation.run_id`` or the UTC time."""
    return report.resolve_run_id(EvaluationParams.parse(evaluation, "evaluation").run_id)


def select_split(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(evaluation_images, evaluation_references)`` of ``evaluation.split``.

    See :func:`ica_captioning.reports.evaluation.select_split`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    return report.select_split(images, captions, encoded_captions, params.split, params.max_images)


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
    params = EvaluationParams.parse(evaluation, "evaluation")
    images_dir = DatasetParams.parse(dataset, "dataset").images_dir
    if params.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"evaluation.device={params.device} but CUDA is not available here")
    model = load_captioner(model_bundle, device=params.device)
    positions = getattr(model.decoder, "max_len", None)  # the Transformer's
    if positions is not None and params.max_len + 1 > positions:
        raise ValueError(
            f"evaluation.max_len={params.max_len} needs {params.max_len + 1} decoder positions "
            f"but the model has train.transformer.max_len={positions}; lower evaluation.max_len"
        )
    start = time.perf_counter()
    generated, references = decode_split(
        model,
        evaluation_images,
        evaluation_references,
        images_dir,
        **params.decode_settings(),
    )
    logger.info(
        "decoded %d images (beam %d) and %d references in %.1f s",
        len(generated),
        params.beam_size,
        len(references),
        time.perf_counter() - start,
    )
    return generated, references


def decode_if_trained(
    model_bundle: Mapping[str, Any] | None,
    evaluation_images: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`decode` of a model that may not exist (``None``: empty tables, no report rows)."""
    if model_bundle is None:
        empty = pd.DataFrame(columns=GENERATED_COLUMNS), pd.DataFrame(columns=REFERENCE_COLUMNS)
        return empty
    return decode(model_bundle, evaluation_images, evaluation_references, dataset, evaluation)


def prepare_objects(
    images: pd.DataFrame,
    detections: pd.DataFrame,
    evaluation_images: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(evaluation_object_grids, evaluation_object_truth)`` of the evaluated images.

    See :func:`ica_captioning.metrics.objects.evaluation_objects`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    match = MatchingParams.parse(matching, "matching")
    return evaluation_objects(
        images,
        detections,
        evaluation_images,
        evaluation_references,
        DatasetParams.parse(dataset, "dataset").instances,
        _lexicon(match),
        grid_size=match.grid_size,
        cell_threshold=match.cell_threshold,
        score_threshold=match.score_threshold,
        use_ground_truth=params.grounding.ground_truth,
        truth_from_references=params.chair.ground_truth_from_references,
    )


def caption_metrics_of(
    evaluation_references: pd.DataFrame,
    object_truth: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    run_id: str,
    **tables: pd.DataFrame,
) -> pd.DataFrame:
    """``caption_metrics`` of every evaluated model (``generated__<variant>`` tables).

    See :func:`ica_captioning.reports.evaluation.caption_report`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    return report.caption_report(
        by_variant(tables, "generated"),
        evaluation_references,
        object_truth,
        _lexicon(MatchingParams.parse(matching, "matching")),
        dataset=DatasetParams.parse(dataset, "dataset").name,
        split=params.split,
        run_id=run_id,
        meteor=params.metrics.meteor,
        spice=params.metrics.spice,
    )


def grounding_metrics_of(
    pseudo_labels: pd.DataFrame,
    grids: pd.DataFrame,
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    run_id: str,
    **tables: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(grounding_metrics, grounding_words)`` of every evaluated model.

    ``tables``: ``generated__<variant>`` and ``reference__<variant>`` (its teacher-forced
    ``reference_attention``). See :func:`ica_captioning.reports.evaluation.grounding_report`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    generated = by_variant(tables, "generated")
    return report.grounding_report(
        generated,
        # A trained model's references may be empty (no reference caption): kept as they are.
        {v: tables[f"reference{SEP}{v}"] for v in generated},
        pseudo_labels,
        grids,
        _lexicon(MatchingParams.parse(matching, "matching")),
        mass=params.grounding.mass,
        dataset=DatasetParams.parse(dataset, "dataset").name,
        split=params.split,
        run_id=run_id,
    )


def build_comparison(
    caption_metrics: pd.DataFrame, grounding_metrics: pd.DataFrame
) -> pd.DataFrame:
    """Table-1 layout: each model's row and each compared pair's difference, per dataset."""
    return comparison_table(caption_metrics, grounding_metrics)


def plot_attention_of(
    evaluation_images: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    **tables: pd.DataFrame,
) -> dict[str, Figure]:
    """``{"image_<id>.png": figure}``: per-word attention of every model (``generated__<v>``).

    See :func:`ica_captioning.reports.figures.attention_figures`.
    """
    figures = EvaluationParams.parse(evaluation, "evaluation").figures
    return attention_figures(
        by_variant(tables, "generated"),
        evaluation_images,
        DatasetParams.parse(dataset, "dataset").images_dir,
        num_images=figures.num_images,
        max_words=figures.max_words,
        seed=figures.seed,
        overlay_alpha=figures.overlay_alpha,
    )


def plot_training_curves_of(**tables: pd.DataFrame | None) -> Figure:
    """Training curves of every model with a history (``history__<variant>``)."""
    return training_curves_figure(
        {LABELS.get(v, v): h for v, h in by_variant(tables, "history").items()},
        title="Training history",
    )


def plot_head_attention(
    evaluation_images: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    **tables: Any,
) -> dict[str, Figure]:
    """``{"image_<id>_<variant>.png": figure}``: per-word attention per head of each model.

    ``tables``: ``model__<variant>`` (bundle) and ``generated__<variant>``; the images are those
    of the attention figures. See :func:`ica_captioning.reports.figures.head_attention_figures`.
    """
    figures = EvaluationParams.parse(evaluation, "evaluation").figures
    generated = by_variant(tables, "generated")
    bundles = by_variant(tables, "model")
    models = {v: load_captioner(bundles[v]) for v in generated}
    return head_attention_figures(
        models,
        generated,
        evaluation_images,
        DatasetParams.parse(dataset, "dataset").images_dir,
        num_images=figures.num_images,
        max_words=figures.max_words,
        seed=figures.seed,
        overlay_alpha=figures.overlay_alpha,
    )
