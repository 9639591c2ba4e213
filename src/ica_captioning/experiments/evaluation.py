"""Evaluation of the experiment grid's runs: the evaluated split, prepared once, and one model.

Each run is evaluated like the ``evaluation`` pipeline (beam search, caption metrics, CHAIR,
grounding against the *true* pseudo-labels and ground-truth masks) on
``experiments.eval_split`` with ``experiments.evaluation_overrides``; a Transformer also gets the
grounding of each cross-attention head (:mod:`ica_captioning.reports.heads`). Used by
:mod:`ica_captioning.experiments.grid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ica_captioning.decoding.runner import decode_split
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.metrics.objects import evaluation_objects
from ica_captioning.model import load_captioner
from ica_captioning.params import (
    DatasetParams,
    EvaluationParams,
    MatchingParams,
    ParameterError,
    deep_merge,
)
from ica_captioning.params.experiments import ExperimentsParams
from ica_captioning.reports import evaluation as report
from ica_captioning.reports.heads import head_result_rows, is_multi_head
from ica_captioning.reports.tables import grounding_column


@dataclass
class EvaluationSet:
    """The evaluated split and its objects, shared by every run (see :func:`prepare_evaluation`)."""

    images: pd.DataFrame
    references: pd.DataFrame
    object_grids: pd.DataFrame
    object_truth: pd.DataFrame
    params: EvaluationParams
    lexicon: Lexicon
    dataset_name: str
    images_dir: str
    #: Images and references of the split that picks a Transformer's best single head
    #: (``experiments.head_selection_split``; ``None``: no per-head rows).
    head_images: pd.DataFrame | None = None
    head_references: pd.DataFrame | None = None


def evaluation_params(
    evaluation: Mapping[str, Any], experiments: ExperimentsParams
) -> EvaluationParams:
    """``params:evaluation`` with ``experiments.evaluation_overrides`` and the split merged in."""
    merged = deep_merge(
        evaluation, {**experiments.evaluation_overrides, "split": experiments.eval_split}
    )
    try:
        return EvaluationParams.parse(merged, "evaluation")
    except ParameterError as err:
        raise ParameterError(
            f"experiments.evaluation_overrides applied to evaluation are invalid: {err}"
        ) from None


def prepare_evaluation(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    detections: pd.DataFrame,
    dataset: DatasetParams,
    matching: MatchingParams,
    evaluation: EvaluationParams,
    head_selection_split: str | None = None,
) -> EvaluationSet:
    """The evaluated images, their references and objects, computed once for the whole grid.

    The same functions as the ``evaluation`` pipeline
    (:func:`ica_captioning.reports.evaluation.select_split`,
    :func:`ica_captioning.metrics.objects.evaluation_objects`). With ``head_selection_split``,
    also that split's images and references (same ``max_images``), on which a Transformer's
    best single head is chosen (:func:`~ica_captioning.reports.heads.head_result_rows`).
    """
    lexicon = Lexicon.from_package(matching.extra_lexicon)
    eval_images, references = report.select_split(
        images, captions, encoded_captions, evaluation.split, evaluation.max_images
    )
    grids, truth = evaluation_objects(
        images,
        detections,
        eval_images,
        references,
        dataset.instances,
        lexicon,
        grid_size=matching.grid_size,
        cell_threshold=matching.cell_threshold,
        score_threshold=matching.score_threshold,
        use_ground_truth=evaluation.grounding.ground_truth,
        truth_from_references=evaluation.chair.ground_truth_from_references,
    )
    head_images = head_refs = None
    if head_selection_split is not None:
        head_images, head_refs = report.select_split(
            images, captions, encoded_captions, head_selection_split, evaluation.max_images
        )
    return EvaluationSet(
        head_images=head_images,
        head_references=head_refs,
        images=eval_images,
        references=references,
        object_grids=grids,
        object_truth=truth,
        params=evaluation,
        lexicon=lexicon,
        dataset_name=dataset.name,
        images_dir=dataset.images_dir,
    )


def evaluate_model(
    bundle: Mapping[str, Any], variant: str, evaluation: EvaluationSet, pseudo_labels: pd.DataFrame
) -> pd.DataFrame:
    """Caption, CHAIR and grounding metrics of one trained model.

    Args:
        bundle: the model bundle.
        variant: the report rows' variant.
        evaluation: the evaluated split (:func:`prepare_evaluation`).
        pseudo_labels: the **true** pseudo-labels (reference-caption grounding).

    Returns:
        ``split, metric, value``; metrics switched off by the parameters (status ``disabled``)
        are left out, metrics that could not run (e.g. METEOR without Java) are NaN.
    """
    params = evaluation.params
    if params.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"evaluation.device={params.device} but CUDA is not available here")
    model = load_captioner(bundle, device=params.device)
    generated, reference_attention = decode_split(
        model,
        evaluation.images,
        evaluation.references,
        evaluation.images_dir,
        **params.decode_settings(),
    )
    heads = None
    if is_multi_head(model):
        heads = head_result_rows(
            model,
            evaluation.images,
            evaluation.references,
            pseudo_labels,
            evaluation.images_dir,
            split=params.split,
            mass=params.grounding.mass,
            batch_size=params.batch_size,
            chooser_images=evaluation.head_images,
            chooser_references=evaluation.head_references,
        )
    del model
    run_id = "experiments"
    captions = report.caption_report(
        {variant: generated},
        evaluation.references,
        evaluation.object_truth,
        evaluation.lexicon,
        dataset=evaluation.dataset_name,
        split=params.split,
        run_id=run_id,
        meteor=params.metrics.meteor,
        spice=params.metrics.spice,
    )
    captions = captions[~captions["status"].astype(str).str.startswith("disabled")]
    grounding, _ = report.grounding_report(
        {variant: generated},
        {variant: reference_attention},
        pseudo_labels,
        evaluation.object_grids,
        evaluation.lexicon,
        mass=params.grounding.mass,
        dataset=evaluation.dataset_name,
        split=params.split,
        run_id=run_id,
    )
    grounding = grounding.assign(
        metric=[
            grounding_column(m, c, k)
            for m, c, k in zip(grounding["metric"], grounding["captions"], grounding["masks"])
        ]
    )
    rows = pd.concat(
        [captions[["split", "metric", "value"]], grounding[["split", "metric", "value"]], heads],
        ignore_index=True,
    )
    return rows.astype({"split": str, "metric": str, "value": "float64"})
