"""Thin node functions of the ``detection`` pipeline (logic in :mod:`ica_captioning.detection`)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ica_captioning.detection import (
    image_records,
    make_backend,
    merge_shards,
    run_sharded,
    validate_images_table,
)


def detect_shards(
    images: pd.DataFrame, dataset: dict[str, Any], detection: dict[str, Any]
) -> pd.DataFrame:
    """Run the configured backend over this process's shards, skipping finished ones.

    Args:
        images: the ``images`` table.
        dataset: ``dataset`` parameters (``images_dir``, ``instances``).
        detection: ``detection`` parameters.

    Returns:
        Progress report, one row per shard (``shard``, ``status``, ``run_dir``, ...).
    """
    images = validate_images_table(images)
    records = image_records(images, dataset.get("images_dir", "."))
    backend = make_backend(detection, dataset, images)
    return run_sharded(
        backend,
        records,
        shards_dir=detection.get("shards_dir", "data/02_intermediate/detection_shards"),
        shard_size=int(detection.get("shard_size", 512)),
        shard_index=int(detection.get("shard_index", 0)),
        num_shards=int(detection.get("num_shards", 1)),
        progress=bool(detection.get("progress", True)),
    )


def merge_detection_shards(
    images: pd.DataFrame,
    progress: pd.DataFrame,
    dataset: dict[str, Any],
    detection: dict[str, Any],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Merge every shard of the run into ``detections`` and ``detection_quarantine``.

    Args:
        images: the ``images`` table.
        progress: report of :func:`detect_shards` (gives the run folder).
        dataset: ``dataset`` parameters.
        detection: ``detection`` parameters.
    """
    images = validate_images_table(images)
    records = image_records(images, dataset.get("images_dir", "."))
    folder = progress["run_dir"].iat[0]
    return merge_shards(folder, records, int(detection.get("shard_size", 512)))
