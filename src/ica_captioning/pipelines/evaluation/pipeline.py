"""The ``evaluation`` pipeline: trained models -> metric tables, Table-1 comparison, figures.

:func:`create_evaluation_pipeline` builds it for any list of variants (the ``transformer``
pipeline evaluates its own models with it, and the Show-Attend-Tell ones when they exist).
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.evaluation import nodes
from ica_captioning.variants import VARIANTS

#: Suffix of the catalog entries that read a model or history only if it was trained
#: (``baseline.model_if_trained``; conf/base/catalog_transformer.yml).
IF_TRAINED = "_if_trained"


def _decode_pipeline(variants: Sequence[str], optional: Collection[str]) -> Pipeline:
    """Decoding of one model; instantiated per variant namespace.

    A variant in ``optional`` reads ``<variant>.model_if_trained`` and decodes nothing (empty
    tables) when the model does not exist.
    """
    inputs = ["model", "evaluation_images", "evaluation_references", "params:dataset",
              "params:evaluation"]  # fmt: skip
    outputs = ["generated_captions", "reference_attention"]
    pipes = []
    for variant in variants:
        func = nodes.decode_if_trained if variant in optional else nodes.decode
        model = f"{variant}.model{IF_TRAINED}" if variant in optional else f"{variant}.model"
        pipes.append(
            Pipeline(
                Pipeline([Node(func, inputs=inputs, outputs=outputs, name="decode")]),
                namespace=variant,
                inputs={
                    "model": model,
                    "evaluation_images": "evaluation_images",
                    "evaluation_references": "evaluation_references",
                },
                parameters={"params:dataset", "params:evaluation"},
                tags=["evaluation", variant],
            )
        )
    return sum(pipes, Pipeline([]))


def create_evaluation_pipeline(
    variants: Sequence[str] = VARIANTS, optional: Collection[str] = ()
) -> Pipeline:
    """Evaluate ``<variant>.model`` of each variant on ``evaluation.split``.

    Args:
        variants: the evaluated variants, in report order (rows of the tables and figures).
        optional: those of ``variants`` evaluated only if their model exists: they read
            ``<variant>.model_if_trained`` and ``<variant>.training_history_if_trained``, and a
            missing model has no rows. The ``transformer`` pipeline lists the Show-Attend-Tell
            variants here, so its reports hold their rows next to its own when they are trained.

    Returns:
        Nodes writing ``caption_metrics``, ``grounding_metrics``, ``grounding_words``,
        ``comparison``, ``attention_figures``, ``training_curves`` and
        ``<variant>.generated_captions`` / ``<variant>.reference_attention``.
    """
    unknown = set(optional) - set(variants)
    if unknown:
        raise ValueError(f"optional variants {sorted(unknown)} are not evaluated ({variants})")
    with warnings.catch_warnings():
        # The shared nodes read the variants' namespaced outputs (``baseline.generated_captions``)
        # by their full names on purpose; Kedro warns about any dotted name outside a namespace.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        return _decode_pipeline(variants, optional) + _shared_pipeline(variants, optional)


def create_pipeline(**kwargs) -> Pipeline:
    """Evaluate ``baseline.model`` and ``ica.model`` on ``evaluation.split``.

    Returns:
        :func:`create_evaluation_pipeline` of :data:`ica_captioning.variants.VARIANTS`.
    """
    return create_evaluation_pipeline(VARIANTS)


def _shared_pipeline(variants: Sequence[str], optional: Collection[str]) -> Pipeline:
    """Nodes that read every variant (metrics, comparison, figures)."""
    generated = nodes.variant_inputs(variants, generated="generated_captions")
    histories = {
        f"history{nodes.SEP}{v}": f"{v}.training_history{IF_TRAINED if v in optional else ''}"
        for v in variants
    }
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
                nodes.caption_metrics_of,
                inputs={
                    "evaluation_references": "evaluation_references",
                    "object_truth": "evaluation_object_truth",
                    "dataset": "params:dataset",
                    "matching": "params:matching",
                    "evaluation": "params:evaluation",
                    "run_id": "evaluation_run_id",
                    **generated,
                },
                outputs="caption_metrics",
                name="compute_caption_metrics",
            ),
            Node(
                nodes.grounding_metrics_of,
                inputs={
                    "pseudo_labels": "pseudo_labels",
                    "grids": "evaluation_object_grids",
                    "dataset": "params:dataset",
                    "matching": "params:matching",
                    "evaluation": "params:evaluation",
                    "run_id": "evaluation_run_id",
                    **nodes.variant_inputs(
                        variants, generated="generated_captions", reference="reference_attention"
                    ),
                },
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
                nodes.plot_attention_of,
                inputs={
                    "evaluation_images": "evaluation_images",
                    "dataset": "params:dataset",
                    "evaluation": "params:evaluation",
                    **generated,
                },
                outputs="attention_figures",
                name="plot_attention",
            ),
            Node(
                nodes.plot_training_curves_of,
                inputs=histories,
                outputs="training_curves",
                name="plot_training_curves",
            ),
        ],
        tags=["evaluation"],
    )
