"""Nodes of the ``evaluation`` pipeline: parse the parameters, call decoding, metrics, reports.

The logic lives in :mod:`ica_captioning.reports.evaluation` (split, caption and grounding
reports), :mod:`ica_captioning.metrics.objects` (object masks and CHAIR ground truth) and
:mod:`ica_captioning.reports.figures`; every default is in conf/base/parameters_*.yml.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure

from ica_captioning.decoding.runner import decode_split
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.metrics.objects import evaluation_objects
from ica_captioning.model import load_captioner
from ica_captioning.params import DatasetParams, EvaluationParams, MatchingParams
from ica_captioning.reports import evaluation as report
from ica_captioning.reports.figures import attention_figures, training_curves_figure
from ica_captioning.reports.tables import comparison_table
from ica_captioning.variants import BASELINE, ICA, LABELS

logger = logging.getLogger(__name__)


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
    start = time.perf_counter()
    generated, references = decode_split(
        model,
        evaluation_images,
        evaluation_references,
        images_dir,
        beam_size=params.beam_size,
        max_len=params.max_len,
        length_penalty=params.length_penalty,
        allow_unk=params.allow_unk,
        batch_size=params.batch_size,
        progress=params.progress,
    )
    logger.info(
        "decoded %d images (beam %d) and %d references in %.1f s",
        len(generated),
        params.beam_size,
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
    """``caption_metrics``: caption metrics and CHAIR of both models (long format).

    See :func:`ica_captioning.reports.evaluation.caption_report`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    return report.caption_report(
        {BASELINE: baseline_generated, ICA: ica_generated},
        evaluation_references,
        object_truth,
        _lexicon(MatchingParams.parse(matching, "matching")),
        dataset=DatasetParams.parse(dataset, "dataset").name,
        split=params.split,
        run_id=run_id,
        meteor=params.metrics.meteor,
        spice=params.metrics.spice,
    )


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
    """``(grounding_metrics, grounding_words)`` of both models.

    See :func:`ica_captioning.reports.evaluation.grounding_report`.
    """
    params = EvaluationParams.parse(evaluation, "evaluation")
    return report.grounding_report(
        {BASELINE: baseline_generated, ICA: ica_generated},
        {BASELINE: baseline_reference_attention, ICA: ica_reference_attention},
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
    """Table-1 layout: baseline, +ICA and the difference per dataset."""
    return comparison_table(caption_metrics, grounding_metrics)


def plot_attention(
    baseline_generated: pd.DataFrame,
    ica_generated: pd.DataFrame,
    evaluation_images: pd.DataFrame,
    dataset: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> dict[str, Figure]:
    """``{"image_<id>.png": figure}``: per-word attention of both models on sampled images.

    See :func:`ica_captioning.reports.figures.attention_figures`.
    """
    figures = EvaluationParams.parse(evaluation, "evaluation").figures
    return attention_figures(
        {BASELINE: baseline_generated, ICA: ica_generated},
        evaluation_images,
        DatasetParams.parse(dataset, "dataset").images_dir,
        num_images=figures.num_images,
        max_words=figures.max_words,
        seed=figures.seed,
        overlay_alpha=figures.overlay_alpha,
    )


def plot_training_curves(baseline_history: pd.DataFrame, ica_history: pd.DataFrame) -> Figure:
    """Training curves of both models (every numeric history column)."""
    return training_curves_figure(
        {LABELS[BASELINE]: baseline_history, LABELS[ICA]: ica_history},
        title="Training history",
    )
