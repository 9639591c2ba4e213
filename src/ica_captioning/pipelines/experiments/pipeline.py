"""The ``experiments`` pipeline: the control-experiment grid (docs/experiments.md).

Lineage (kedro-viz)::

    upstream stages ─► prepare_experiment_evaluation ─► experiments.<variant>.run_variant (one
    node per variant, all seeds inside) ─► collect_experiment_results ─► summarise_experiments
                                                                      └► plot_experiments

One node per variant keeps the graph readable (11 boxes under the ``experiments`` namespace
instead of 33) and lets ``ParallelRunner`` train variants side by side; the seeds of a variant
run in a loop inside its node because they are a run-time parameter (``experiments.seeds``).
The variant nodes are built from the variant names in the configuration files when Kedro loads
the pipeline (:func:`configured_variants`): add variants there, not with ``--params``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from kedro.pipeline import Node, Pipeline

from ica_captioning.params.experiments import safe_name
from ica_captioning.pipelines.detection import create_pipeline as detection_pipeline
from ica_captioning.pipelines.experiments import nodes
from ica_captioning.pipelines.ingestion import create_pipeline as ingestion_pipeline
from ica_captioning.pipelines.matching import create_pipeline as matching_pipeline
from ica_captioning.pipelines.pretraining import create_pipeline as pretraining_pipeline

logger = logging.getLogger(__name__)

#: Tag of every node of the grid (not of the upstream stages):
#: ``kedro run --pipeline experiments --tags experiments`` reuses existing upstream tables.
TAG = "experiments"
#: Tag of the nodes that collect, summarise and plot the per-variant results. With the variant
#: tags (``experiments.<variant>``, also on the evaluation-split node) a grid can be run in
#: parts: one job per ``--tags experiments.<variant>``, then one ``--tags experiments_report``.
REPORT_TAG = "experiments_report"
#: Namespace of the variant nodes and their outputs (``experiments.<variant>.results``).
NAMESPACE = "experiments"

#: Upstream tables every variant node reads (shared, not namespaced).
TRAINING_INPUTS = [
    "images",
    "encoded_captions",
    "pseudo_labels",
    "vocabulary",
    "pretrained_encoder",
]
EVALUATION_SET = [
    "experiment_evaluation_images",
    "experiment_evaluation_references",
    "experiment_object_grids",
    "experiment_object_truth",
    "experiment_head_images",
    "experiment_head_references",
]
PARAMETERS = [
    "params:train",
    "params:dataset",
    "params:matching",
    "params:evaluation",
    "params:experiments",
]


def configured_variants(env: str | None = None, conf_source: Path | None = None) -> list[str]:
    """Variant names of ``experiments.variants`` in the configuration files.

    Read from ``conf/base`` soft-merged with ``conf/<env>`` (``env``, else ``$KEDRO_ENV``, else
    ``local``), in ``./conf`` when the working directory is a project (``kedro`` commands run
    from its root), else in the package's own project.

    Returns:
        The names in configuration order; ``[]`` (with a warning) when none can be read.
    """
    from ica_captioning.params.conf import load_parameters

    if conf_source is None and (Path.cwd() / "conf" / "base").is_dir():
        conf_source = Path.cwd() / "conf"
    env = env or os.environ.get("KEDRO_ENV") or "local"
    try:
        params = load_parameters(env, conf_source)
    except Exception:
        # e.g. no conf/<env> folder: conf/base alone.
        params = load_parameters("base", conf_source)
    variants = (params.get("experiments") or {}).get("variants") or {}
    if not variants:
        logger.warning("no experiments.variants in the configuration: no experiment nodes")
    return [str(name) for name in variants]


def create_experiments_pipeline(variants: Sequence[str]) -> Pipeline:
    """The grid's nodes for ``variants``, without the upstream stages.

    Args:
        variants: variant names (``experiments.variants`` keys), in report order.

    Returns:
        ``prepare_experiment_evaluation``, ``experiments.<variant>.run_variant`` per variant,
        ``collect_experiment_results``, ``collect_experiment_histories``,
        ``summarise_experiments`` and ``plot_experiments``.
    """
    if not variants:
        return Pipeline([])
    prepare = Pipeline(
        [
            Node(
                nodes.prepare_evaluation_set,
                inputs=["images", "captions", "encoded_captions", "detections", *PARAMETERS],
                outputs=EVALUATION_SET,
                name="prepare_experiment_evaluation",
            )
        ],
        tags=[TAG, *(f"{TAG}.{safe_name(v)}" for v in variants)],
    )
    per_variant = sum(
        (
            Pipeline(
                [
                    Node(
                        nodes.variant_node_function(variant),
                        inputs=[*TRAINING_INPUTS, *EVALUATION_SET, *PARAMETERS],
                        outputs=["results", "histories"],
                        name="run_variant",
                    )
                ],
                namespace=f"{NAMESPACE}.{safe_name(variant)}",
                inputs=set(TRAINING_INPUTS) | set(EVALUATION_SET),
                parameters=set(PARAMETERS),
                tags=[TAG, f"{TAG}.{safe_name(variant)}"],
            )
            for variant in variants
        ),
        Pipeline([]),
    )
    results = [f"{NAMESPACE}.{safe_name(v)}.results" for v in variants]
    histories = [f"{NAMESPACE}.{safe_name(v)}.histories" for v in variants]
    with warnings.catch_warnings():
        # The shared nodes read the variants' namespaced outputs by their full names on
        # purpose; Kedro warns about any dotted name outside a namespace.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        shared = Pipeline(
            [
                Node(
                    nodes.collect_results,
                    inputs=["params:experiments", *results],
                    outputs="experiment_results",
                    name="collect_experiment_results",
                ),
                Node(
                    nodes.collect_histories,
                    inputs=histories,
                    outputs="experiment_histories",
                    name="collect_experiment_histories",
                ),
                Node(
                    nodes.summarise_experiments,
                    inputs=["experiment_results", "params:experiments"],
                    outputs="experiment_summary",
                    name="summarise_experiments",
                ),
                Node(
                    nodes.plot_experiments,
                    inputs=["experiment_results", "params:experiments"],
                    outputs="experiment_figure",
                    name="plot_experiments",
                ),
            ],
            tags=[TAG, REPORT_TAG],
        )
    return prepare + per_variant + shared


def create_pipeline(**kwargs) -> Pipeline:
    """The experiments grid with the stages it reads from.

    As for ``train``, the upstream stages are included so that
    ``kedro run --pipeline experiments`` works on a fresh checkout; add ``--tags experiments``
    to run only the grid on existing upstream tables. Not part of ``__default__``.

    Returns:
        ``ingestion + detection + matching + pretraining`` plus
        :func:`create_experiments_pipeline` of
        :func:`configured_variants`.
    """
    upstream = (
        ingestion_pipeline() + detection_pipeline() + matching_pipeline() + pretraining_pipeline()
    )
    return upstream + create_experiments_pipeline(configured_variants())
