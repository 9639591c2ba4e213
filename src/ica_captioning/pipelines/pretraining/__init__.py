"""The ``pretraining`` pipeline: in-domain pretraining of the encoder trunk."""

from ica_captioning.pipelines.pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
