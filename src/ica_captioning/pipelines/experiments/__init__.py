"""The experiments pipeline (see pipeline.py); ``find_pipelines`` reads ``create_pipeline`` here."""

from ica_captioning.pipelines.experiments.pipeline import create_pipeline

__all__ = ["create_pipeline"]
