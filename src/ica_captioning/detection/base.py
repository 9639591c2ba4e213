"""Detector backend interface and the records that flow through it.

A backend takes a batch of images and returns, per image, its instances: class name, score,
box and mask (as COCO compressed RLE). Images it cannot process come back as quarantine rows
(columns of the ``quarantine`` table in ``docs/contracts.md``), never as silent drops.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ica_captioning.data.tables import require_columns

#: Columns of the ``detections`` table (docs/contracts.md), in order.
DETECTION_COLUMNS = [
    "image_id",
    "instance_id",
    "class_name",
    "score",
    "box",
    "rle_counts",
    "height",
    "width",
    "status",
]
#: Columns the detection stage needs from the ``images`` table.
IMAGE_COLUMNS = ["image_id", "file_path", "width", "height"]

#: detectron2 is not on the package index. Its source imports ``pkg_resources``, which
#: setuptools >= 81 no longer ships, so setuptools is pinned first (the build runs without
#: isolation, in this environment, and detectron2 needs ``pkg_resources`` at run time too).
SETUPTOOLS_FOR_DETECTRON2 = "pip install 'setuptools<81'"
INSTALL_DETECTRON2 = (
    f"{SETUPTOOLS_FOR_DETECTRON2} && "
    "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
)


class DetectionConfigError(ValueError):
    """A detection parameter or input table is unusable (the message says which and why)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image to detect on.

    Attributes:
        image_id: id from the ``images`` table.
        file_path: path as stored in the ``images`` table (relative to ``dataset.images_dir``).
        path: resolved path of the file.
        width: width from the ``images`` table.
        height: height from the ``images`` table.
    """

    image_id: int
    file_path: str
    path: Path
    width: int
    height: int


@dataclass
class ImageDetections:
    """The instances found in one image (``N`` may be 0).

    Attributes:
        image_id: id of the image.
        height: mask height ``H`` (must equal the image's height).
        width: mask width ``W`` (must equal the image's width).
        class_names: ``N`` class names.
        scores: ``[N]`` float scores in ``[0, 1]``.
        boxes: ``[N, 4]`` float ``[x0, y0, x1, y1]`` boxes in pixels.
        rle_counts: ``N`` COCO compressed RLE strings of ``[H, W]`` masks.
    """

    image_id: int
    height: int
    width: int
    class_names: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.float32))
    rle_counts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.class_names)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(n)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(n, 4)
        if len(self.rle_counts) != n:
            raise ValueError(
                f"image {self.image_id}: {n} class names but {len(self.rle_counts)} masks"
            )


def detections_frame(results: Sequence[ImageDetections]) -> pd.DataFrame:
    """Turn per-image results into ``detections`` rows (contract columns and dtypes).

    An image with no instance gets one row with ``instance_id = -1``, null class, score, box and
    mask, and ``status = "no_detections"``, so "nothing found" differs from "not processed".
    """
    image_id, instance_id, class_name, score, box, rle, height, width, status = (
        [] for _ in range(9)
    )
    for res in results:
        n = len(res.class_names)
        if n == 0:
            image_id.append(res.image_id)
            instance_id.append(-1)
            class_name.append(None)
            score.append(np.nan)
            box.append(None)
            rle.append(None)
            height.append(res.height)
            width.append(res.width)
            status.append("no_detections")
            continue
        image_id.extend([res.image_id] * n)
        instance_id.extend(range(n))
        class_name.extend(res.class_names)
        score.extend(res.scores.tolist())
        box.extend(res.boxes.tolist())
        rle.extend(res.rle_counts)
        height.extend([res.height] * n)
        width.extend([res.width] * n)
        status.extend(["ok"] * n)
    return pd.DataFrame(
        {
            "image_id": pd.Series(image_id, dtype="int64"),
            "instance_id": pd.Series(instance_id, dtype="int64"),
            "class_name": pd.Series(class_name, dtype=object),
            "score": pd.Series(score, dtype="float64"),
            "box": pd.Series(box, dtype=object),
            "rle_counts": pd.Series(rle, dtype=object),
            "height": pd.Series(height, dtype="int64"),
            "width": pd.Series(width, dtype="int64"),
            "status": pd.Series(status, dtype=object),
        },
        columns=DETECTION_COLUMNS,
    )


class DetectorBackend(abc.ABC):
    """Images in, instances out.

    Subclasses set :attr:`name` and implement :meth:`detect`. A backend may also report
    problems found before any image is processed (e.g. annotations for unknown images) through
    :meth:`preflight_quarantine`.
    """

    #: backend name as in ``detection.backend``.
    name: str = "base"
    #: images per call of :meth:`detect`.
    batch_size: int = 1

    @abc.abstractmethod
    def detect(
        self, records: Sequence[ImageRecord]
    ) -> tuple[list[ImageDetections], list[dict[str, Any]]]:
        """Detect instances in a batch of images.

        Args:
            records: ``B`` images.

        Returns:
            ``(results, quarantine)``: one :class:`ImageDetections` per image that could be
            processed, and one quarantine row
            (:func:`ica_captioning.data.tables.quarantine_row`) per image that could not (every
            record appears in exactly one of the two).
        """

    def preflight_quarantine(self) -> list[dict[str, Any]]:
        """Quarantine rows found while setting the backend up (default: none)."""
        return []

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change the output; a change starts a fresh set of shards."""
        return {"backend": self.name}


def validate_images_table(images: pd.DataFrame) -> pd.DataFrame:
    """Check the ``images`` table has what detection needs; return it sorted by ``image_id``.

    Raises:
        DetectionConfigError: a required column is missing, a size is missing or not positive,
            or image ids repeat.
    """
    require_columns(images, "images", IMAGE_COLUMNS, error=DetectionConfigError)
    for col in ("image_id", "width", "height"):
        bad = images.loc[images[col].isna(), "image_id"]
        if len(bad) or (col != "image_id" and (images[col].fillna(1) <= 0).any()):
            raise DetectionConfigError(
                f"images table has missing or non-positive {col} (image_id(s) "
                f"{bad.tolist()[:10]}); image sizes come from ingestion's image validation"
            )
    dup = images["image_id"][images["image_id"].duplicated()]
    if len(dup):
        raise DetectionConfigError(
            f"images table repeats image_id(s) {sorted(dup.unique().tolist())[:10]}"
        )
    return images.sort_values("image_id", kind="stable").reset_index(drop=True)


def image_records(images: pd.DataFrame, images_dir: str | Path) -> list[ImageRecord]:
    """Image records for a (validated) ``images`` table.

    Args:
        images: table with ``image_id``, ``file_path``, ``width``, ``height``.
        images_dir: folder ``file_path`` is relative to (``dataset.images_dir``).
    """
    root = Path(images_dir)
    return [
        ImageRecord(int(i), str(f), root / str(f), int(w), int(h))
        for i, f, w, h in zip(
            images["image_id"], images["file_path"], images["width"], images["height"]
        )
    ]
