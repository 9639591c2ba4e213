"""The objects of each evaluated image: ground-truth instances and detector pseudo-labels.

Both come as ``detections``-format tables (docs/contracts.md) and are reduced to per-(image,
class) binary ``G × G`` grids with the matching stage's own functions, so the masks used here
are built exactly like the pseudo-labels the ICA loss was trained on. :func:`evaluation_objects`
gathers everything the grounding metrics and CHAIR need about the evaluated images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.detection.base import detections_frame, image_records
from ica_captioning.matching.lexicon import Lexicon
from ica_captioning.matching.pseudo_labels import class_grids
from ica_captioning.metrics.chair import caption_mentions

logger = logging.getLogger(__name__)

GRID_COLUMNS = ["image_id", "class_name", "grid_size", "grid"]

#: ``masks`` values of the evaluation object grids: detector masks (what the ICA loss trains on)
#: and ground-truth instance masks.
PSEUDO_LABELS, GROUND_TRUTH = "pseudo_labels", "ground_truth"


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


def evaluation_objects(
    images: pd.DataFrame,
    detections: pd.DataFrame,
    evaluation_images: pd.DataFrame,
    references: pd.DataFrame,
    instances: str | Sequence[str] | None,
    lexicon: Lexicon,
    *,
    grid_size: int,
    cell_threshold: float,
    score_threshold: float,
    use_ground_truth: bool,
    truth_from_references: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Object masks (as grids) and object classes of the evaluated images.

    Args:
        images: the full ``images`` table.
        detections: ``detections`` table (the detector's output, before matching).
        evaluation_images: the evaluated images (``image_id``).
        references: their reference captions (``image_id``, ``tokens``).
        instances: ``dataset.instances`` (COCO instances JSON files; missing ones are skipped).
        lexicon: words -> classes, for the objects the reference captions name.
        grid_size: ``G`` of the masks (``matching.grid_size``).
        cell_threshold: ``matching.cell_threshold``.
        score_threshold: detections below this score are ignored (``matching.score_threshold``).
        use_ground_truth: read ground-truth masks from ``instances``
            (``evaluation.grounding.ground_truth``).
        truth_from_references: CHAIR's ground truth also holds the objects the reference
            captions name (``evaluation.chair.ground_truth_from_references``).

    Returns:
        ``(object_grids, object_truth)``: :data:`GRID_COLUMNS` plus ``masks``
        (:data:`PSEUDO_LABELS`: detections as the matching stage keeps them; :data:`GROUND_TRUTH`:
        the instances); ``object_truth`` has one row per image with ``classes`` (CHAIR ground
        truth), ``source``, ``status`` and the evaluated ``categories`` (same list on every row).
    """
    ids = evaluation_images["image_id"].astype("int64").tolist()
    parts = []
    pseudo = object_grids(detections, ids, grid_size, cell_threshold, score_threshold)
    pseudo["masks"] = PSEUDO_LABELS
    parts.append(pseudo)

    gt, categories, status = None, [], "disabled by evaluation.grounding.ground_truth"
    if use_ground_truth:
        gt, categories, status = ground_truth_objects(instances, images, ids)
    if gt is not None:
        truth_grids = object_grids(gt, ids, grid_size, cell_threshold, 0.0)
        truth_grids["masks"] = GROUND_TRUTH
        parts.append(truth_grids)
        truth = present_classes(gt, ids)
        source = GROUND_TRUTH
    else:
        logger.warning("no ground-truth masks (%s): CHAIR uses detections", status)
        truth = present_classes(detections, ids, score_threshold)
        categories = sorted(detections["class_name"].dropna().unique().tolist())
        source = "detections"
    if truth_from_references:
        add_reference_mentions(truth, references, categories, lexicon)
    object_truth = pd.DataFrame(
        {
            "image_id": ids,
            "classes": [sorted(truth[i]) for i in ids],
            "source": source,
            "status": status,
            "categories": [list(categories)] * len(ids),
        }
    )
    return pd.concat(parts, ignore_index=True), object_truth


def add_reference_mentions(
    truth: dict[int, set[str]],
    references: pd.DataFrame,
    categories: Sequence[str],
    lexicon: Lexicon,
) -> None:
    """Add to ``truth`` (in place) the evaluated classes that the reference captions name.

    Rohrbach et al. (CHAIR) count the objects named by the reference captions as present too.

    Args:
        truth: image id -> classes present; every image of ``references`` has an entry.
        references: ``image_id`` and ``tokens`` (list of words) per reference caption.
        categories: the classes under evaluation.
        lexicon: words -> classes.
    """
    for iid, toks in zip(references["image_id"], references["tokens"]):
        for _, cname, _ in caption_mentions(toks, truth[int(iid)], categories, lexicon):
            truth[int(iid)].add(cname)
