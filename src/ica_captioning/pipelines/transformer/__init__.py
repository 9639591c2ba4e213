"""The ``transformer`` pipeline (opt-in): the Transformer decoder without and with the ICA loss."""

from ica_captioning.pipelines.transformer.pipeline import create_pipeline

__all__ = ["create_pipeline"]
