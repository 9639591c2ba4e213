"""Build the detector backend chosen by ``detection.backend`` from the parameters."""

from __future__ import annotations

from typing import get_args

import pandas as pd

from ica_captioning.detection.base import DetectionConfigError, DetectorBackend
from ica_captioning.params import DatasetParams, DetectionParams

#: The backend names, as the parameter schema declares them (``detection.backend``).
BACKENDS: tuple[str, ...] = get_args(DetectionParams.model_fields["backend"].annotation)


def make_backend(
    detection: DetectionParams, dataset: DatasetParams, images: pd.DataFrame
) -> DetectorBackend:
    """Create the configured backend.

    Backends are imported here, on demand, so that the annotations backend never loads torch
    models and a missing detectron2 matters only when it is selected.

    Args:
        detection: the parsed ``params:detection`` (conf/base/parameters_detection.yml).
        dataset: the parsed ``params:dataset`` (``dataset.instances``).
        images: the ``images`` table (sizes for the annotations backend).

    Raises:
        DetectionConfigError: unknown backend or unusable settings.
        Detectron2Unavailable: detectron2 selected but not installed, or installed but
            failing to import (:class:`Detectron2ImportFailed`, with the likely fix).
    """
    name = detection.backend
    if name == "annotations":
        from ica_captioning.detection.annotations import AnnotationsBackend

        return AnnotationsBackend.from_params(detection, dataset, images)
    if name == "torchvision":
        from ica_captioning.detection.torchvision_backend import TorchvisionBackend

        return TorchvisionBackend.from_params(detection)
    if name == "detectron2":
        from ica_captioning.detection.detectron2_backend import Detectron2Backend

        return Detectron2Backend.from_params(detection)
    # The schema admits only BACKENDS; this guards a params object built without validation.
    raise DetectionConfigError(f"detection.backend={name!r} is not one of {list(BACKENDS)}")
