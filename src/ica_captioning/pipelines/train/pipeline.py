"""The ``train`` pipeline: one training pipeline instantiated per variant namespace."""

from __future__ import annotations

from collections.abc import Sequence

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.detection import create_pipeline as detection_pipeline
from ica_captioning.pipelines.ingestion import create_pipeline as ingestion_pipeline
from ica_captioning.pipelines.matching import create_pipeline as matching_pipeline
from ica_captioning.pipelines.pretraining import create_pipeline as pretraining_pipeline
from ica_captioning.pipelines.train import nodes
from ica_captioning.variants import VARIANTS

# Each variant namespace reads the shared ``params:train`` and its own
# ``params:<variant>.train_overrides`` and writes ``<variant>.model`` and
# ``<variant>.training_history``.


def create_training_pipeline(variants: Sequence[str] = VARIANTS, tag: str = "train") -> Pipeline:
    """The variants' training nodes, without upstream stages.

    Args:
        variants: the namespaces (the ``transformer`` pipeline passes its own).
        tag: tag of every node (besides its variant's name).

    Returns:
        Nodes ``<variant>.train_model`` (by default ``baseline.train_model`` and
        ``ica.train_model``).
    """
    base = Pipeline(
        [
            Node(
                nodes.train_model,
                inputs=[
                    "images",
                    "encoded_captions",
                    "pseudo_labels",
                    "vocabulary",
                    "pretrained_encoder",
                    "params:train",
                    "params:train_overrides",
                    "params:dataset",
                ],
                outputs=["model", "training_history"],
                name="train_model",
            )
        ]
    )
    shared = {"images", "encoded_captions", "pseudo_labels", "vocabulary", "pretrained_encoder"}
    return sum(
        (
            Pipeline(
                base,
                namespace=variant,
                inputs=shared,
                parameters={"params:train", "params:dataset"},
                tags=[tag, variant],
            )
            for variant in variants
        ),
        Pipeline([]),
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The train pipeline with the stages it reads from.

    The upstream stages are part of ``train`` so that ``kedro run --pipeline train`` works on a
    fresh checkout; add ``--only-missing-outputs`` to skip those whose outputs already exist.

    Returns:
        ``ingestion + detection + matching + pretraining`` plus both training variants.
    """
    upstream = (
        ingestion_pipeline() + detection_pipeline() + matching_pipeline() + pretraining_pipeline()
    )
    return upstream + create_training_pipeline()
