"""The ``evaluation`` pipeline: trained models -> metric tables, Table-1 comparison, figures."""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.evaluation import nodes
from ica_captioning.variants import BASELINE, ICA, VARIANTS


def _per_variant(*names: str) -> list[str]:
    """Namespaced dataset names: each of ``names`` of the baseline, then of the +ICA model.

    The shared nodes take the baseline's inputs first, then the +ICA model's.
    """
    return [f"{variant}.{name}" for variant in (BASELINE, ICA) for name in names]


def _decode_pipeline() -> Pipeline:
    """Decoding of one model; instantiated per variant namespace."""
    base = Pipeline(
        [
            Node(
                nodes.decode,
                inputs=[
                    "model",
                    "evaluation_images",
                    "evaluation_references",
                    "params:dataset",
                    "params:evaluation",
                ],
                outputs=["generated_captions", "reference_attention"],
                name="decode",
            )
        ]
    )
    return sum(
        (
            Pipeline(
                base,
                namespace=variant,
                inputs={"evaluation_images", "evaluation_references"},
                parameters={"params:dataset", "params:evaluation"},
                tags=["evaluation", variant],
            )
            for variant in VARIANTS
        ),
        Pipeline([]),
    )


def create_pipeline(**kwargs) -> Pipeline:
    """Evaluate ``baseline.model`` and ``ica.model`` on ``evaluation.split``.

    Returns:
        Nodes writing ``caption_metrics``, ``grounding_metrics``, ``grounding_words``,
        ``comparison``, ``attention_figures``, ``training_curves`` and
        ``<variant>.generated_captions``.
    """
    with warnings.catch_warnings():
        # The shared nodes read the variants' namespaced outputs (``baseline.generated_captions``)
        # by their full names on purpose; Kedro warns about any dotted name outside a namespace.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        shared = _shared_pipeline()
    return _decode_pipeline() + shared


def _shared_pipeline() -> Pipeline:
    """Nodes that read both variants (metrics, comparison, figures)."""
    return Pipeline(
        [
            Node(
                nodes.make_run_id,
                inputs="params:evaluation",
                outputs="evaluation_run_id",
                name="make_evaluation_run_id",
            ),
            Node(
                nodes.select_split,
                inputs=["images", "captions", "encoded_captions", "params:evaluation"],
                outputs=["evaluation_images", "evaluation_references"],
                name="select_evaluation_split",
            ),
            Node(
                nodes.prepare_objects,
                inputs=[
                    "images",
                    "detections",
                    "evaluation_images",
                    "evaluation_references",
                    "params:dataset",
                    "params:matching",
                    "params:evaluation",
                ],
                outputs=["evaluation_object_grids", "evaluation_object_truth"],
                name="prepare_evaluation_objects",
            ),
            Node(
                nodes.compute_caption_metrics,
                inputs=[
                    *_per_variant("generated_captions"),
                    "evaluation_references",
                    "evaluation_object_truth",
                    "params:dataset",
                    "params:matching",
                    "params:evaluation",
                    "evaluation_run_id",
                ],
                outputs="caption_metrics",
                name="compute_caption_metrics",
            ),
            Node(
                nodes.compute_grounding_metrics,
                inputs=[
                    *_per_variant("generated_captions", "reference_attention"),
                    "pseudo_labels",
                    "evaluation_object_grids",
                    "params:dataset",
                    "params:matching",
                    "params:evaluation",
                    "evaluation_run_id",
                ],
                outputs=["grounding_metrics", "grounding_words"],
                name="compute_grounding_metrics",
            ),
            Node(
                nodes.build_comparison,
                inputs=["caption_metrics", "grounding_metrics"],
                outputs="comparison",
                name="build_comparison",
            ),
            Node(
                nodes.plot_attention,
                inputs=[
                    *_per_variant("generated_captions"),
                    "evaluation_images",
                    "params:dataset",
                    "params:evaluation",
                ],
                outputs="attention_figures",
                name="plot_attention",
            ),
            Node(
                nodes.plot_training_curves,
                inputs=_per_variant("training_history"),
                outputs="training_curves",
                name="plot_training_curves",
            ),
        ],
        tags=["evaluation"],
    )
