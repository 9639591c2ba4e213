"""The objects of each evaluated image: ground-truth instances and detector pseudo-labels.

Both come as ``detections``-format tables (docs/contracts.md) and are reduced to per-(image,
class) binary ``G × G`` grids with the matching stage's own functions, so the masks used here
are built exactly like the pseudo-labels the ICA loss was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.detection.base import detections_frame, image_records
from ica_captioning.matching.pseudo_labels import class_grids

logger = logging.getLogger(__name__)

GRID_COLUMNS = ["image_id", "class_name", "grid_size", "grid"]


def _paths(instances: str | Sequence[str] | None) -> list[Path]:
    if instances is None:
        return []
    if isinstance(instances, (str, Path)):
        return [Path(instances)]
    return [Path(p) for p in instances]


def ground_truth_objects(
    instances: str | Sequence[str] | None,
    images: pd.DataFrame,
    image_ids: Iterable[int],
    include_crowd: bool = True,
) -> tuple[pd.DataFrame | None, list[str], str]:
    """Ground-truth instance masks of some images from COCO instances JSON files.

    Args:
        instances: ``dataset.instances`` (one path, a list, or None). Missing files are skipped
            (a COCO setup may list only some splits) and named in the returned status.
        images: the full ``images`` table (``image_id``, ``file_path``, ``width``, ``height``).
        image_ids: the images whose objects are wanted.
        include_crowd: keep ``iscrowd`` regions.

    Returns:
        ``(objects, categories, status)``: a ``detections``-format table (score 1) or ``None``
        when no instances file exists; the category names of the files; ``"ok"`` or why there
        is no (or only partial) ground truth.
    """
    paths = _paths(instances)
    existing = [p for p in paths if p.is_file()]
    missing = [str(p) for p in paths if not p.is_file()]
    if not existing:
        reason = (
            "dataset.instances not set"
            if not paths
            else f"instances file(s) not found: {', '.join(missing)}"
        )
        return None, [], reason
    backend = AnnotationsBackend(existing, images, include_crowd=include_crowd)
    wanted = set(int(i) for i in image_ids)
    subset = images[images["image_id"].astype("int64").isin(wanted)]
    results, quarantine = backend.detect(image_records(subset, "."))
    if quarantine:
        logger.warning(
            "%d ground-truth annotation(s) of evaluated images are unusable (first: %s)",
            len(quarantine),
            quarantine[0]["reason"],
        )
    status = "ok" if not missing else f"ok; instances file(s) not found: {', '.join(missing)}"
    return detections_frame(results), backend.categories, status


def object_grids(
    objects: pd.DataFrame,
    image_ids: Iterable[int],
    grid_size: int,
    cell_threshold: float,
    score_threshold: float = 0.0,
) -> pd.DataFrame:
    """Binary grid of every (image, class) present among ``objects``.

    Args:
        objects: ``detections``-format table.
        image_ids: images to keep.
        grid_size: ``G``.
        cell_threshold: cell on when the class covers ``>=`` this fraction of it.
        score_threshold: detections below this score are ignored (``matching.score_threshold``).

    Returns:
        :data:`GRID_COLUMNS`: ``grid`` is ``np.packbits`` of the ``G × G`` mask (row-major);
        classes whose merged mask covers no pixel are left out.
    """
    wanted = set(int(i) for i in image_ids)
    kept = objects[
        (objects["status"] == "ok")
        & (objects["score"] >= float(score_threshold))
        & objects["image_id"].astype("int64").isin(wanted)
    ]
    if kept.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in GRID_COLUMNS})
    pairs = kept[["image_id", "class_name"]].drop_duplicates(ignore_index=True)
    grids = class_grids(kept, pairs, int(grid_size), float(cell_threshold))
    grids = grids[grids["grid"].notna()].reset_index(drop=True)
    grids["grid_size"] = int(grid_size)
    return grids[GRID_COLUMNS]


def present_classes(
    objects: pd.DataFrame, image_ids: Iterable[int], score_threshold: float = 0.0
) -> dict[int, set[str]]:
    """Image id -> classes present (every wanted image gets an entry, possibly empty)."""
    out: dict[int, set[str]] = {int(i): set() for i in image_ids}
    kept = objects[(objects["status"] == "ok") & (objects["score"] >= float(score_threshold))]
    for iid, cname in zip(kept["image_id"], kept["class_name"]):
        if int(iid) in out:
            out[int(iid)].add(str(cname))
    return out
