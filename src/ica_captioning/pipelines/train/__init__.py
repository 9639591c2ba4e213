"""The ``train`` pipeline: SAT baseline (λ_aux = 0) and SAT + ICA (λ_aux = 0.1)."""

from ica_captioning.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
