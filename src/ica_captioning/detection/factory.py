"""Build the detector backend chosen by ``detection.backend`` from the parameters."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ica_captioning.detection.base import DetectionConfigError, DetectorBackend

BACKENDS = ("annotations", "torchvision", "detectron2")


def make_backend(
    detection: dict[str, Any], dataset: dict[str, Any], images: pd.DataFrame
) -> DetectorBackend:
    """Create the configured backend.

    Args:
        detection: the ``detection`` parameters (conf/base/parameters_detection.yml).
        dataset: the ``dataset`` parameters (for ``dataset.instances``).
        images: the ``images`` table (sizes for the annotations backend).

    Raises:
        DetectionConfigError: unknown backend or unusable settings.
        Detectron2Unavailable: detectron2 selected but not installed.
    """
    name = detection.get("backend", "annotations")
    common = {
        "score_threshold": float(detection.get("score_threshold", 0.5)),
        "max_detections": int(detection.get("max_detections", 100)),
        "batch_size": int(detection.get("batch_size", 4)),
    }
    if name == "annotations":
        from ica_captioning.detection.annotations import AnnotationsBackend

        return AnnotationsBackend(
            dataset.get("instances"),
            images,
            include_crowd=bool(detection.get("include_crowd", True)),
            batch_size=max(64, common["batch_size"]),
        )
    if name == "torchvision":
        from ica_captioning.detection.torchvision_backend import TorchvisionBackend

        tv = detection.get("torchvision") or {}
        return TorchvisionBackend(
            weights=detection.get("weights"),
            model=tv.get("model", "maskrcnn_resnet50_fpn"),
            device=str(detection.get("device", "cpu")),
            mask_threshold=float(detection.get("mask_threshold", 0.5)),
            min_size=int(tv.get("min_size", 800)),
            max_size=int(tv.get("max_size", 1333)),
            categories=tv.get("categories"),
            options=dict(tv.get("options") or {}),
            **common,
        )
    if name == "detectron2":
        from ica_captioning.detection.detectron2_backend import (
            DEFAULT_CONFIG,
            Detectron2Backend,
        )

        d2 = detection.get("detectron2") or {}
        return Detectron2Backend(
            weights=detection.get("weights"),
            config=d2.get("config", DEFAULT_CONFIG),
            device=str(detection.get("device", "cuda")),
            categories=d2.get("categories"),
            **common,
        )
    raise DetectionConfigError(f"detection.backend={name!r} is not one of {list(BACKENDS)}")
