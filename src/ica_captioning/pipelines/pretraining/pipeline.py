"""The ``pretraining`` pipeline: the encoder trunk learns the embedded world's classes."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.pretraining import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """One node: ``images`` + ``detections`` → ``pretrained_encoder``, ``pretraining_history``.

    It reads only the training split (val/test images are never opened) and is skipped,
    cheaply, when ``train.encoder.weights`` is not ``pretrained`` (``conf/gpu``: ImageNet).
    The upstream stages are not part of this pipeline; ``kedro run --pipeline train`` runs them
    all in order.
    """
    return Pipeline(
        [
            Node(
                nodes.pretrain_encoder_node,
                inputs=[
                    "images",
                    "detections",
                    "params:pretraining",
                    "params:train",
                    "params:dataset",
                ],
                outputs=["pretrained_encoder", "pretraining_history"],
                name="pretrain_encoder",
                tags=["pretraining"],
            )
        ]
    )
