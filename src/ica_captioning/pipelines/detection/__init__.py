"""``detection`` pipeline: detector backend over all images, sharded and resumable."""

from ica_captioning.pipelines.detection.pipeline import create_pipeline

__all__ = ["create_pipeline"]
