"""``matching`` pipeline: caption tokens -> detected classes -> grid pseudo-labels."""

from ica_captioning.pipelines.matching.pipeline import create_pipeline

__all__ = ["create_pipeline"]
