"""The control-experiment grid without Kedro: plan the runs, train and evaluate each, collect.

A *run* is one (variant, seed). Its train settings are, merged in this order (each a set of
single keys, :func:`ica_captioning.params.deep_merge`): ``params:train``,
``experiments.train_overrides`` (the reduced budget, every variant), the variant's
``train_overrides``, then ``seed`` and a checkpoint folder of its own (and, with
``train.encoder.weights: pretrained``, the pretraining stage's weights file, as in the ``train``
pipeline). Its training
pseudo-labels are the true ones transformed by the variant's ``masks`` kind
(:func:`ica_captioning.experiments.masks.transform_labels`, seeded with the run's seed); only
the rows of training images change, so validation and evaluation always see the true labels.

Each run is evaluated like the ``evaluation`` pipeline (beam search, caption metrics, CHAIR,
grounding against the *true* pseudo-labels and ground-truth masks), on
``experiments.eval_split`` with ``experiments.evaluation_overrides``
(:mod:`ica_captioning.experiments.evaluation`). Its rows of the long
results table are ``variant, seed, split, metric, value``: the caption metrics and CHAIR under
their report names (``BLEU-4``, ``CHAIR-i`` ...), the grounding metrics as
``<metric> [<captions>/<masks>]`` (:func:`ica_captioning.reports.tables.grounding_column`), and
``mask_iou`` (split ``train``): the mean IoU of the run's training labels with the true ones;
a Transformer's runs add per-head grounding rows (docs/experiments.md).

:func:`run_grid` runs everything in one process (:func:`grid_inputs` builds its inputs from the
catalog's tables); the ``experiments`` Kedro pipeline calls :func:`plan_grid`,
:func:`~ica_captioning.experiments.evaluation.prepare_evaluation` and :func:`run_variant` from
its nodes.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ica_captioning.experiments.evaluation import (
    EvaluationSet,
    evaluate_model,
    evaluation_params,
    prepare_evaluation,
)
from ica_captioning.experiments.masks import mask_iou, transform_labels
from ica_captioning.experiments.stats import RESULT_COLUMNS
from ica_captioning.experiments.tracking import NullTracker, Tracker
from ica_captioning.params import (
    DatasetParams,
    MatchingParams,
    ParameterError,
    TrainParams,
    deep_merge,
)
from ica_captioning.params.experiments import ExperimentsParams, safe_name
from ica_captioning.pretraining import with_pretrained_weights
from ica_captioning.training import train_captioner

logger = logging.getLogger(__name__)

#: ``metric`` of the achieved mask quality rows (split ``train``).
MASK_IOU = "mask_iou"
#: Split of the ``mask_iou`` rows: the labels replaced are those of the training images.
LABELS_SPLIT = "train"
#: Columns of the per-epoch histories table: these, then the history's own columns.
HISTORY_KEYS = ("variant", "seed")


@dataclass(frozen=True)
class RunSpec:
    """One (variant, seed) of the grid with its resolved train settings."""

    variant: str
    seed: int
    masks: str
    params: TrainParams
    index: int  # 1-based position in the grid (variant order, then seed order)
    total: int

    @property
    def name(self) -> str:
        """Run name (MLflow run name, log lines): ``<variant>-seed<seed>``."""
        return f"{self.variant}-seed{self.seed}"


@dataclass
class TrainingData:
    """The training inputs shared by every run (the true pseudo-labels)."""

    images: pd.DataFrame
    encoded_captions: pd.DataFrame
    pseudo_labels: pd.DataFrame
    vocabulary: Mapping[str, Any]
    images_dir: str
    #: The ``pretraining`` stage's bundle, used when ``train.encoder.weights`` is
    #: ``pretrained`` (:func:`ica_captioning.pretraining.with_pretrained_weights`).
    pretrained_encoder: Mapping[str, Any] | None = None


def grid_inputs(
    tables: Mapping[str, Any], params: Mapping[str, Any], experiments: ExperimentsParams
) -> tuple[EvaluationSet, TrainingData]:
    """The evaluated split and the training data of a grid run outside Kedro.

    Args:
        tables: the upstream tables by catalog name: ``images``, ``captions``,
            ``encoded_captions``, ``detections``, ``pseudo_labels``, ``vocabulary`` and
            optionally ``pretrained_encoder``.
        params: parameter sections ``dataset``, ``matching`` and ``evaluation``.
        experiments: the grid's settings (evaluation overrides, head selection split).

    Returns:
        ``(evaluation set, training data)`` as the pipeline's nodes build them.
    """
    dataset = DatasetParams.parse(params["dataset"], "dataset")
    evaluation = prepare_evaluation(
        tables["images"],
        tables["captions"],
        tables["encoded_captions"],
        tables["detections"],
        dataset,
        MatchingParams.parse(params["matching"], "matching"),
        evaluation_params(params["evaluation"], experiments),
        experiments.head_selection_split,
    )
    training = TrainingData(
        images=tables["images"],
        encoded_captions=tables["encoded_captions"],
        pseudo_labels=tables["pseudo_labels"],
        vocabulary=tables["vocabulary"],
        images_dir=dataset.images_dir,
        pretrained_encoder=tables.get("pretrained_encoder"),
    )
    return evaluation, training


def resolve_run(
    experiments: ExperimentsParams, train: Mapping[str, Any], variant: str, seed: int
) -> TrainParams:
    """The train settings of one run (module docstring: the merge order).

    Raises:
        ParameterError: a bad key in an override, named with the variant it came from.
    """
    if variant not in experiments.variants:
        raise ParameterError(
            f"experiments.variants has no variant {variant!r} (variants: "
            f"{', '.join(experiments.variants)})"
        )
    overrides = deep_merge(
        experiments.train_overrides, experiments.variants[variant].train_overrides
    )
    base_dir = overrides.get("checkpoint_dir", train.get("checkpoint_dir", "checkpoints"))
    own_dir = Path(str(base_dir)) / "experiments" / safe_name(variant) / f"seed{seed}"
    overrides = deep_merge(overrides, {"seed": int(seed), "checkpoint_dir": str(own_dir)})
    try:
        return TrainParams.resolve(train, overrides)
    except ParameterError as err:
        raise ParameterError(
            f"experiments.variants.{variant}: its train settings (train + "
            f"experiments.train_overrides + its train_overrides) are invalid: {err}"
        ) from None


def plan_grid(
    experiments: ExperimentsParams, train: Mapping[str, Any], variants: Sequence[str] | None = None
) -> list[RunSpec]:
    """Every run of the grid (or of ``variants``), each with its settings resolved.

    Resolving all of them first stops a bad override before any training.
    """
    names = list(experiments.variants)
    specs = []
    for variant in names if variants is None else variants:
        for k, seed in enumerate(experiments.seeds):
            params = resolve_run(experiments, train, variant, seed)  # checks the name too
            specs.append(
                RunSpec(
                    variant=variant,
                    seed=int(seed),
                    masks=experiments.variants[variant].masks,
                    params=params,
                    index=names.index(variant) * len(experiments.seeds) + k + 1,
                    total=experiments.num_runs,
                )
            )
    return specs


def training_labels(
    pseudo_labels: pd.DataFrame, images: pd.DataFrame, kind: str, seed: int
) -> tuple[pd.DataFrame, float]:
    """The run's pseudo-labels: the training images' rows transformed, the others unchanged.

    Args:
        pseudo_labels: the true ``pseudo_labels`` table.
        images: ``images`` table (``split`` tells which rows are training rows).
        kind: one of :data:`ica_captioning.experiments.masks.MASK_KINDS`.
        seed: seed of the transform.

    Returns:
        ``(labels, mean IoU of the transformed training rows with the true ones)``; the IoU is
        1.0 for ``true`` and NaN when there is no training row.
    """
    train_ids = images.loc[images["split"] == "train", "image_id"].astype("int64")
    is_train = pseudo_labels["image_id"].astype("int64").isin(set(train_ids.tolist()))
    if kind == "true":
        return pseudo_labels, 1.0 if bool(is_train.any()) else math.nan
    part = pseudo_labels[is_train]
    if part.empty:
        return pseudo_labels, math.nan
    changed = transform_labels(part, kind, seed=seed)
    grid = pseudo_labels["grid"].copy()
    grid[is_train.to_numpy()] = changed["grid"].to_numpy()
    return pseudo_labels.assign(grid=grid), float(mask_iou(part, changed).mean())


@dataclass
class RunOutcome:
    """What one run produced."""

    results: pd.DataFrame  # RESULT_COLUMNS
    history: pd.DataFrame  # HISTORY_KEYS + the training history's columns
    bundle: dict[str, Any]


def run_one(
    spec: RunSpec,
    data: TrainingData,
    evaluation: EvaluationSet,
    tracker: Tracker | None = None,
) -> RunOutcome:
    """Train and evaluate one (variant, seed); log it to ``tracker`` when given."""
    tracker = tracker or NullTracker()
    tags = {
        "variant": spec.variant,
        "seed": str(spec.seed),
        "masks": spec.masks,
        "dataset": evaluation.dataset_name,
        "eval_split": evaluation.params.split,
    }
    with tracker.run(spec.name, tags) as tracked:
        labels, achieved_iou = training_labels(
            data.pseudo_labels, data.images, spec.masks, spec.seed
        )
        params = with_pretrained_weights(spec.params, data.pretrained_encoder)
        tracked.log_params(
            {
                "variant": spec.variant,
                "seed": spec.seed,
                "masks": spec.masks,
                "train": params.to_dict(),
                "evaluation": evaluation.params.to_dict(),
            }
        )
        start = time.perf_counter()
        bundle, history = train_captioner(
            params,
            data.images,
            data.encoded_captions,
            labels,
            data.vocabulary,
            data.images_dir,
        )
        trained_s = time.perf_counter() - start
        tracked.log_history(history)
        start = time.perf_counter()
        metrics = evaluate_model(bundle, spec.variant, evaluation, data.pseudo_labels)
        evaluated_s = time.perf_counter() - start
        metrics = pd.concat(
            [
                metrics,
                pd.DataFrame(
                    {"split": [LABELS_SPLIT], "metric": [MASK_IOU], "value": [achieved_iou]}
                ),
            ],
            ignore_index=True,
        )
        tracked.log_metrics(
            {
                f"{s}/{m}": v
                for s, m, v in zip(metrics["split"], metrics["metric"], metrics["value"])
            }
            | {"time/train_s": trained_s, "time/evaluate_s": evaluated_s}
        )
        tracked.log_model(bundle)
    results = metrics.assign(variant=spec.variant, seed=spec.seed)[list(RESULT_COLUMNS)]
    results = results.astype({"variant": str, "seed": "int64"})
    history = history.copy()
    history.insert(0, "seed", spec.seed)
    history.insert(0, "variant", spec.variant)
    _log_run(spec, len(history), trained_s, evaluated_s, metrics)
    return RunOutcome(results=results, history=history, bundle=bundle)


def _log_run(
    spec: RunSpec, epochs: int, trained_s: float, evaluated_s: float, metrics: pd.DataFrame
) -> None:
    values = dict(zip(metrics["metric"], metrics["value"]))
    # Short labels: Kedro's rich log handler would read "[reference/...]" as markup.
    shown = {
        "BLEU-4": "BLEU-4",
        "CIDEr": "CIDEr",
        "attention_correctness [reference/pseudo_labels]": "AC(reference)",
        MASK_IOU: MASK_IOU,
    }
    text = ", ".join(
        f"{label} {values[name]:.3f}"
        for name, label in shown.items()
        if name in values and np.isfinite(values[name])
    )
    logger.info(
        "experiments run %d/%d %s: trained %d epoch(s) in %.0f s, evaluated in %.0f s; %s",
        spec.index,
        spec.total,
        spec.name,
        epochs,
        trained_s,
        evaluated_s,
        text,
    )


def run_variant(
    variant: str,
    experiments: ExperimentsParams,
    train: Mapping[str, Any],
    data: TrainingData,
    evaluation: EvaluationSet,
    tracker: Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every seed of one variant.

    Returns:
        ``(results, histories)``: the long results (:data:`RESULT_COLUMNS`) and the per-epoch
        histories (``variant``, ``seed`` + the training history's columns) of its runs.
    """
    specs = plan_grid(experiments, train, [variant])
    if experiments.num_threads is not None:
        torch.set_num_threads(int(experiments.num_threads))
    results, histories = [], []
    start = time.perf_counter()
    bar = tqdm(specs, desc=f"experiments {variant}", unit="run", disable=not experiments.progress)
    for k, spec in enumerate(bar, start=1):
        outcome = run_one(spec, data, evaluation, tracker)
        results.append(outcome.results)
        histories.append(outcome.history)
        del outcome
        gc.collect()
        per_run = (time.perf_counter() - start) / k
        if k < len(specs):
            logger.info(
                "experiments %s: %d/%d seeds done, ~%.0f s per run, ~%.0f s left for it",
                variant,
                k,
                len(specs),
                per_run,
                per_run * (len(specs) - k),
            )
    return _concat(results, list(RESULT_COLUMNS)), _concat(histories, list(HISTORY_KEYS))


def run_grid(
    experiments: ExperimentsParams,
    train: Mapping[str, Any],
    data: TrainingData,
    evaluation: EvaluationSet,
    tracker: Tracker | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every variant × seed in this process (what the Kedro pipeline spreads over nodes).

    Returns:
        ``(results, histories)`` of the whole grid, variants in configuration order.
    """
    plan_grid(experiments, train)  # every override checked before the first training
    outputs = [
        run_variant(variant, experiments, train, data, evaluation, tracker)
        for variant in experiments.variants
    ]
    return collect([r for r, _ in outputs]), collect([h for _, h in outputs])


def collect(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-variant tables (empty ones are dropped)."""
    kept = [t for t in tables if t is not None and len(t)]
    if not kept:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    return pd.concat(kept, ignore_index=True)


def _concat(tables: list[pd.DataFrame], first: list[str]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame(columns=first)
    out = pd.concat(tables, ignore_index=True)
    return out[first + [c for c in out.columns if c not in first]]
