"""Supervision for encoder pretraining: what the detection stage found, on the attention grid.

Two targets per training image, both from the ``detections`` table (any backend):

* **cell occupancy** ``[C + 1, G, G]``: per grid cell, the share of its area each class covers,
  plus the uncovered share as class 0 (background) — a distribution over ``C + 1`` classes;
* **instances**: per detected instance its class and its ``G × G`` area fractions, normalised to
  weights that average the encoder's cell features over the instance (the form of the linear
  probe in ``benchmarks/probe_encoder.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ica_captioning.data.tables import require_columns
from ica_captioning.matching.grid import rle_cell_fractions_batch

logger = logging.getLogger(__name__)

DETECTION_COLUMNS = ["image_id", "class_name", "score", "rle_counts", "height", "width", "status"]


class PretrainingDataError(ValueError):
    """The detections cannot supervise pretraining (names the problem and the records)."""


@dataclass
class PretrainTargets:
    """Targets of ``N`` training images with ``A`` detected instances of ``C`` classes.

    Attributes:
        image_ids: ``[N]`` int64, the images in row order.
        classes: ``C`` class names (index ``c`` is target class ``c + 1``; 0 is background).
        cells: ``[N, C + 1, G, G]`` float32, per cell a distribution over background + classes.
        inst_image: ``[A]`` int64 row of each instance's image.
        inst_class: ``[A]`` int64 class index in ``classes`` (0-based, no background).
        inst_weight: ``[A, G·G]`` float32 cell weights of each instance (rows sum to 1).
    """

    image_ids: np.ndarray
    classes: tuple[str, ...]
    cells: np.ndarray
    inst_image: np.ndarray
    inst_class: np.ndarray
    inst_weight: np.ndarray


def occupancy_targets(
    detections: pd.DataFrame, image_ids: Sequence[int], grid_size: int, score_threshold: float
) -> PretrainTargets:
    """Cell-occupancy and instance targets of ``image_ids`` from their detections.

    Args:
        detections: the ``detections`` table; rows of other images are ignored (the caller
            passes the training split's ids only).
        image_ids: the images to supervise, in row order.
        grid_size: G (``train.encoder.grid_size``).
        score_threshold: detections with a lower score are ignored.

    Returns:
        The targets.

    Raises:
        PretrainingDataError: missing columns, no kept detection at all, or an image without a
            detection record (every image must have been processed by the detection stage).
    """
    require_columns(detections, "detections", DETECTION_COLUMNS)
    ids = np.asarray(image_ids, dtype=np.int64)
    g = int(grid_size)
    processed = set(detections["image_id"].astype(np.int64).tolist())
    unprocessed = [int(i) for i in ids if int(i) not in processed]
    if unprocessed:
        raise PretrainingDataError(
            f"detections: {len(unprocessed)} training images have no detection record "
            f"(e.g. image_id {unprocessed[:5]}); run the detection stage on the whole split"
        )
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    kept = detections[
        detections["image_id"].isin(ids)
        & (detections["status"] == "ok")
        & (detections["score"] >= score_threshold)
    ]
    if kept.empty:
        raise PretrainingDataError(
            f"detections: no instance with score >= {score_threshold} in the "
            f"{len(ids)} training images; nothing to pretrain on"
        )
    classes = tuple(sorted(kept["class_name"].astype(str).unique()))
    class_index = {name: k for k, name in enumerate(classes)}
    fractions = np.zeros((len(kept), g, g))  # [A, G, G]
    sizes = kept[["height", "width"]].astype(int)
    for (height, width), rows in sizes.groupby(["height", "width"]).groups.items():
        positions = kept.index.get_indexer(rows)
        counts = kept.loc[rows, "rle_counts"].tolist()
        fractions[positions] = rle_cell_fractions_batch(counts, int(height), int(width), g)
    inst_image = row_of.loc[kept["image_id"].astype(np.int64)].to_numpy()
    inst_class = kept["class_name"].astype(str).map(class_index).to_numpy(dtype=np.int64)

    # Union of a class's instances, per cell: overlapping instances of one class are capped at
    # full coverage; the uncovered share of the cell is background.
    cells = np.zeros((len(ids), len(classes) + 1, g, g))
    np.add.at(cells, (inst_image, inst_class + 1), fractions)
    cells = np.minimum(cells, 1.0)
    cells[:, 0] = np.clip(1.0 - cells[:, 1:].sum(axis=1), 0.0, 1.0)
    cells /= cells.sum(axis=1, keepdims=True)

    flat = fractions.reshape(len(kept), g * g)
    area = flat.sum(axis=1, keepdims=True)
    keep = area[:, 0] > 0
    if not keep.all():
        # An empty mask has no place to average features over; it still counts in ``cells``
        # (as nothing), so only the instance loss leaves it out.
        logger.warning(
            "pretraining: %d detections with an empty mask are left out of the instance loss "
            "(e.g. image_id %s)",
            int((~keep).sum()),
            kept.loc[~keep, "image_id"].head(3).tolist(),
        )
    weights = flat[keep] / area[keep]
    return PretrainTargets(
        image_ids=ids,
        classes=classes,
        cells=cells.astype(np.float32),
        inst_image=inst_image[keep].astype(np.int64),
        inst_class=inst_class[keep],
        inst_weight=weights.astype(np.float32),
    )
