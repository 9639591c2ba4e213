"""Thin node functions of the ``detection`` pipeline (logic in :mod:`ica_captioning.detection`).

Each node parses its parameter sections once (:mod:`ica_captioning.params`) and passes typed
values on; every value comes from conf/base/parameters*.yml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ica_captioning.detection import (
    image_records,
    make_backend,
    merge_shards,
    run_sharded,
    validate_images_table,
)
from ica_captioning.params import DatasetParams, DetectionParams


def detect_shards(
    images: pd.DataFrame, dataset: Mapping[str, Any], detection: Mapping[str, Any]
) -> pd.DataFrame:
    """Run the configured backend over this process's shards, skipping finished ones.

    Args:
        images: the ``images`` table.
        dataset: ``params:dataset`` (``images_dir``, ``instances``).
        detection: ``params:detection``.

    Returns:
        Progress report, one row per shard (``shard``, ``status``, ``run_dir``, ...).

    Raises:
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    data = DatasetParams.parse(dataset, "dataset")
    params = DetectionParams.parse(detection, "detection")
    images = validate_images_table(images)
    records = image_records(images, data.images_dir)
    backend = make_backend(params, data, images)
    return run_sharded(
        backend,
        records,
        params.shards_dir,
        shard_size=params.shard_size,
        shard_index=params.shard_index,
        num_shards=params.num_shards,
        progress=params.progress,
    )


def merge_detection_shards(
    images: pd.DataFrame,
    progress: pd.DataFrame,
    dataset: Mapping[str, Any],
    detection: Mapping[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge every shard of the run into ``detections`` and ``detection_quarantine``.

    Args:
        images: the ``images`` table.
        progress: report of :func:`detect_shards` (gives the run folder).
        dataset: ``params:dataset``.
        detection: ``params:detection``.

    Raises:
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    data = DatasetParams.parse(dataset, "dataset")
    params = DetectionParams.parse(detection, "detection")
    images = validate_images_table(images)
    records = image_records(images, data.images_dir)
    folder = progress["run_dir"].iat[0]
    return merge_shards(folder, records, params.shard_size)
