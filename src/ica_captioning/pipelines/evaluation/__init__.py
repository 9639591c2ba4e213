"""The evaluation pipeline (see pipeline.py); ``find_pipelines`` reads ``create_pipeline`` here."""

from ica_captioning.pipelines.evaluation.pipeline import (
    create_evaluation_pipeline,
    create_pipeline,
)

__all__ = ["create_evaluation_pipeline", "create_pipeline"]
