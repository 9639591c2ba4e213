"""The evaluation pipeline (see pipeline.py); ``find_pipelines`` reads ``create_pipeline`` here."""

from ica_captioning.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
