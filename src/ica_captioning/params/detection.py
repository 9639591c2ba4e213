"""Schema of ``params:detection`` (conf/base/parameters_detection.yml)."""

from __future__ import annotations

from typing import Any, Literal

from ica_captioning.params.base import Params
from ica_captioning.params.types import Device, Fraction, NonNegativeInt, PositiveInt


class TorchvisionParams(Params):
    """torchvision Mask R-CNN settings."""

    model: Literal["maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]
    min_size: PositiveInt
    max_size: PositiveInt
    categories: list[str] | None
    options: dict[str, Any]


class Detectron2Params(Params):
    """detectron2 Mask R-CNN settings."""

    config: str
    categories: list[str] | None


class DetectionParams(Params):
    """The detector backend and how it runs over the images."""

    backend: Literal["annotations", "torchvision", "detectron2"]
    weights: str | None
    device: Device
    batch_size: PositiveInt
    score_threshold: Fraction
    max_detections: PositiveInt
    mask_threshold: Fraction
    include_crowd: bool
    shard_size: PositiveInt
    shard_index: NonNegativeInt
    num_shards: PositiveInt
    shards_dir: str
    progress: bool
    torchvision: TorchvisionParams
    detectron2: Detectron2Params
