"""Detector backends (annotations, torchvision, detectron2), RLE helpers and sharded runs.

Importing this package does not import torch models or detectron2; backends load lazily.
"""

from ica_captioning.detection.base import (
    DETECTION_COLUMNS,
    DetectionConfigError,
    DetectorBackend,
    ImageDetections,
    ImageRecord,
    detections_frame,
    image_records,
    validate_images_table,
)
from ica_captioning.detection.factory import BACKENDS, make_backend
from ica_captioning.detection.rle import (
    decode_masks,
    encode_masks,
    rle_areas,
    rle_boxes,
    rle_string_to_counts,
    union_rle,
)
from ica_captioning.detection.shards import merge_shards, run_dir, run_sharded

__all__ = [
    "BACKENDS",
    "DETECTION_COLUMNS",
    "DetectionConfigError",
    "DetectorBackend",
    "ImageDetections",
    "ImageRecord",
    "decode_masks",
    "detections_frame",
    "encode_masks",
    "image_records",
    "make_backend",
    "merge_shards",
    "rle_areas",
    "rle_boxes",
    "rle_string_to_counts",
    "run_dir",
    "run_sharded",
    "union_rle",
    "validate_images_table",
]
