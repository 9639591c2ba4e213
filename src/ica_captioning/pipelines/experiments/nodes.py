"""Nodes of the ``experiments`` pipeline: parse the parameters, call the grid module.

The logic lives in :mod:`ica_captioning.experiments.grid` (runs), :mod:`.report` (summary,
figure) and :mod:`.tracking` (MLflow); every default is in conf/base/parameters_experiments.yml.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from ica_captioning.experiments import evaluation as run_evaluation
from ica_captioning.experiments import grid
from ica_captioning.experiments import report as experiment_report
from ica_captioning.experiments.tracking import make_tracker
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.params import DatasetParams, MatchingParams
from ica_captioning.params.experiments import ExperimentsParams

logger = logging.getLogger(__name__)


def _experiments(experiments: Mapping[str, Any]) -> ExperimentsParams:
    return ExperimentsParams.parse(experiments, "experiments")


def prepare_evaluation_set(
    images: pd.DataFrame,
    captions: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    detections: pd.DataFrame,
    train: Mapping[str, Any],
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    experiments: Mapping[str, Any],
) -> tuple[pd.DataFrame, ...]:
    """Check the whole grid's settings, then select the evaluated split and its objects once.

    Every run's train settings and the evaluation settings are resolved here, so a bad
    override stops the run before the first training.

    Returns:
        ``(experiment_evaluation_images, experiment_evaluation_references,
        experiment_object_grids, experiment_object_truth, experiment_head_images,
        experiment_head_references)``; the last two are the images and references of
        ``experiments.head_selection_split`` (empty tables when it is null).
    """
    exp = _experiments(experiments)
    specs = grid.plan_grid(exp, train)
    params = run_evaluation.evaluation_params(evaluation, exp)
    logger.info(
        "experiments: %d variants × %d seeds = %d runs, evaluated on %s",
        len(exp.variants),
        len(exp.seeds),
        len(specs),
        params.split,
    )
    chosen = run_evaluation.prepare_evaluation(
        images,
        captions,
        encoded_captions,
        detections,
        DatasetParams.parse(dataset, "dataset"),
        MatchingParams.parse(matching, "matching"),
        params,
        exp.head_selection_split,
    )
    empty = pd.DataFrame()
    return (
        chosen.images,
        chosen.references,
        chosen.object_grids,
        chosen.object_truth,
        empty if chosen.head_images is None else chosen.head_images,
        empty if chosen.head_references is None else chosen.head_references,
    )


def run_variant(
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    vocabulary: dict[str, Any],
    pretrained_encoder: dict[str, Any] | None,
    evaluation_images: pd.DataFrame,
    evaluation_references: pd.DataFrame,
    object_grids: pd.DataFrame,
    object_truth: pd.DataFrame,
    head_images: pd.DataFrame,
    head_references: pd.DataFrame,
    train: Mapping[str, Any],
    dataset: Mapping[str, Any],
    matching: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    experiments: Mapping[str, Any],
    *,
    variant: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and evaluate every seed of one variant (:func:`.grid.run_variant`).

    Returns:
        ``(experiments.<variant>.results, experiments.<variant>.histories)``.
    """
    exp = _experiments(experiments)
    if variant not in exp.variants:
        raise ValueError(
            f"the pipeline has a node for variant {variant!r} but this run's "
            f"experiments.variants does not define it ({', '.join(exp.variants)}). The variant "
            "nodes are built from the configuration files (conf/base, conf/local, "
            "conf/$KEDRO_ENV); keep the two in step"
        )
    data_params = DatasetParams.parse(dataset, "dataset")
    match = MatchingParams.parse(matching, "matching")
    evaluation_set = run_evaluation.EvaluationSet(
        images=evaluation_images,
        references=evaluation_references,
        object_grids=object_grids,
        object_truth=object_truth,
        params=run_evaluation.evaluation_params(evaluation, exp),
        lexicon=Lexicon.from_package(match.extra_lexicon),
        dataset_name=data_params.name,
        images_dir=data_params.images_dir,
        head_images=None if head_images.empty else head_images,
        head_references=None if head_references.empty else head_references,
    )
    data = grid.TrainingData(
        images=images,
        encoded_captions=encoded_captions,
        pseudo_labels=pseudo_labels,
        vocabulary=vocabulary,
        images_dir=data_params.images_dir,
        pretrained_encoder=pretrained_encoder,
    )
    tracker = make_tracker(exp.tracking)
    return grid.run_variant(variant, exp, train, data, evaluation_set, tracker)


def variant_node_function(variant: str) -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`run_variant` bound to one variant (picklable, for ``ParallelRunner``)."""
    return functools.update_wrapper(functools.partial(run_variant, variant=variant), run_variant)


def collect_results(experiments: Mapping[str, Any], *tables: pd.DataFrame) -> pd.DataFrame:
    """``experiment_results``: every variant's long results, in configuration order.

    Raises:
        ValueError: a variant of this run's ``experiments.variants`` has no results (no node:
            it was added after the pipeline was built, e.g. with ``--params``).
    """
    exp = _experiments(experiments)
    results = grid.collect(tables)
    missing = [v for v in exp.variants if v not in set(results["variant"])]
    if missing:
        raise ValueError(
            f"experiments.variants {missing} have no results: the pipeline's variant nodes are "
            "built from the configuration files when Kedro loads the pipeline, so variants "
            "added with --params are not run. Add them to conf/base (or conf/local) "
            "parameters_experiments.yml"
        )
    order = {v: k for k, v in enumerate(exp.variants)}
    results = results.sort_values(
        ["variant", "seed"],
        key=lambda s: s.map(order) if s.name == "variant" else s,
        kind="stable",
    )
    return results.reset_index(drop=True)


def collect_histories(*tables: pd.DataFrame) -> pd.DataFrame:
    """``experiment_histories``: every run's per-epoch training history."""
    return grid.collect(tables)


def summarise_experiments(results: pd.DataFrame, experiments: Mapping[str, Any]) -> pd.DataFrame:
    """``experiment_summary`` (:func:`ica_captioning.experiments.stats.summarise`)."""
    return experiment_report.summarise_results(results, _experiments(experiments))


def plot_experiments(results: pd.DataFrame, experiments: Mapping[str, Any]) -> Figure:
    """``experiment_figure``: attention gain vs mask quality."""
    return experiment_report.experiment_figure(results, _experiments(experiments))
