"""The ``train`` pipeline: one training pipeline instantiated per variant namespace."""

from __future__ import annotations

import importlib
import logging

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.train import nodes

logger = logging.getLogger(__name__)

#: Variant namespaces; each reads the shared ``params:train`` and its own
#: ``params:<variant>.train_overrides`` and writes ``<variant>.model`` and
#: ``<variant>.training_history``.
VARIANTS = ("baseline", "ica")

#: Stages whose outputs the train pipeline reads. They are part of ``train`` so that
#: ``kedro run --pipeline train`` works on a fresh checkout; add ``--only-missing-outputs`` to skip
#: the stages whose outputs already exist.
UPSTREAM = ("ingestion", "detection", "matching")


def create_training_pipeline() -> Pipeline:
    """Both variants' training nodes, without upstream stages.

    Returns:
        Nodes ``baseline.train_model`` and ``ica.train_model``.
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
                    "params:train",
                    "params:train_overrides",
                    "params:dataset",
                ],
                outputs=["model", "training_history"],
                name="train_model",
            )
        ]
    )
    shared = {"images", "encoded_captions", "pseudo_labels", "vocabulary"}
    return sum(
        (
            Pipeline(
                base,
                namespace=variant,
                inputs=shared,
                parameters={"params:train", "params:dataset"},
                tags=["train", variant],
            )
            for variant in VARIANTS
        ),
        Pipeline([]),
    )


def create_pipeline(**kwargs) -> Pipeline:
    """The train pipeline with the stages it depends on.

    Returns:
        ``ingestion + detection + matching`` (those present) plus both training variants.
    """
    pipe = create_training_pipeline()
    for stage in UPSTREAM:
        try:
            module = importlib.import_module(f"ica_captioning.pipelines.{stage}.pipeline")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith(f"ica_captioning.pipelines.{stage}"):
                logger.debug("stage %s not available; train pipeline runs without it", stage)
                continue
            raise
        pipe = module.create_pipeline() + pipe
    return pipe
