"""The ``annotations`` backend: instance masks from COCO ``instances`` JSON files.

On the embedded dataset it returns the generator's ground truth; on real COCO it is an oracle
detector (the upper bound for pseudo-label quality). Every instance gets score 1.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils

from ica_captioning.data.tables import quarantine_row
from ica_captioning.detection.base import (
    DetectionConfigError,
    DetectorBackend,
    ImageDetections,
    ImageRecord,
)
from ica_captioning.detection.rle import rle_string_to_counts
from ica_captioning.params import DatasetParams, DetectionParams

logger = logging.getLogger(__name__)

SOURCE = "annotation"
#: Smallest batch: reading annotations costs little per image, so larger batches only save
#: loop overhead (``detection.batch_size`` is sized for the model backends).
MIN_BATCH_SIZE = 64


def _few(ids: set[int] | Sequence[int], k: int = 5) -> str:
    """The first ``k`` ids (sorted), "…" and the count when there are more."""
    first = sorted(ids)[:k]
    text = ", ".join(str(i) for i in first)
    return f"{text} … ({len(ids)} in all)" if len(ids) > k else text


def _as_path_list(paths: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``dataset.instances`` is one path or a list of paths."""
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def read_instances(path: str | Path) -> dict[str, Any]:
    """Read and check the top level of a COCO instances JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        DetectionConfigError: not JSON, or lacks ``annotations`` / ``categories`` lists.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO instances file {path} (dataset.instances) does not exist; run the ingestion "
            "pipeline to generate the embedded dataset or fix the path"
        )
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise DetectionConfigError(f"{path} is not valid JSON: {err}") from err
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DetectionConfigError(
                f"{path} is not a COCO instances file: top-level '{key}' list missing"
            )
    return data


class AnnotationsBackend(DetectorBackend):
    """Detector that reads COCO instance annotations.

    Args:
        instances: one or more COCO ``instances_*.json`` paths.
        images: the ``images`` table (``image_id``, ``width``, ``height``); masks are built at
            these sizes and checked against them.
        include_crowd: keep ``iscrowd`` regions (COCO marks groups such as crowds of people).
        batch_size: images per :meth:`detect` call.
    """

    name = "annotations"

    def __init__(
        self,
        instances: str | Path | Sequence[str | Path],
        images: pd.DataFrame,
        *,
        include_crowd: bool,
        batch_size: int = MIN_BATCH_SIZE,
    ) -> None:
        self.paths = _as_path_list(instances)
        if not self.paths:
            raise DetectionConfigError(
                "detection.backend=annotations needs COCO instances file(s) in dataset.instances"
            )
        self.include_crowd = bool(include_crowd)
        self.batch_size = int(batch_size)
        sizes = {
            int(i): (int(h), int(w))
            for i, h, w in zip(images["image_id"], images["height"], images["width"])
        }
        self._categories: dict[int, str] = {}
        self._by_image: dict[int, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
        self._preflight: list[dict[str, Any]] = []
        # Per file: image ids its annotations refer to, and ids its ``images`` list declares.
        self._file_ids: dict[Path, tuple[set[int], set[int]]] = {}
        for path in self.paths:
            self._index_file(path, read_instances(path), sizes)
        self._check_coverage(set(sizes))

    @classmethod
    def from_params(
        cls, detection: DetectionParams, dataset: DatasetParams, images: pd.DataFrame
    ) -> AnnotationsBackend:
        """The backend for ``dataset.instances`` with the settings of ``params:detection``.

        Args:
            detection: the parsed ``params:detection``.
            dataset: the parsed ``params:dataset`` (``instances``).
            images: the ``images`` table.
        """
        return cls(
            dataset.instances,
            images,
            include_crowd=detection.include_crowd,
            batch_size=max(MIN_BATCH_SIZE, detection.batch_size),
        )

    # -- set-up -------------------------------------------------------------------------------
    def _index_file(
        self, path: Path, data: dict[str, Any], sizes: dict[int, tuple[int, int]]
    ) -> None:
        """Index one file's annotations by image; quarantine those that cannot belong anywhere."""
        cats: dict[int, str] = {}
        for i, cat in enumerate(data["categories"]):
            try:
                cid, cname = int(cat["id"]), str(cat["name"]).strip()
            except (KeyError, TypeError, ValueError) as err:
                raise DetectionConfigError(
                    f"{path}: categories[{i}] lacks a valid 'id'/'name' ({err!r})"
                ) from err
            known = self._categories.get(cid)
            if known is not None and known != cname:
                raise DetectionConfigError(
                    f"{path}: category id {cid} is '{cname}' but an earlier instances file "
                    f"calls it '{known}'"
                )
            cats[cid] = cname
        self._categories.update(cats)
        # The file's own image sizes must agree with the images table: masks are stored at them.
        file_sizes: dict[int, tuple[int, int]] = {}
        listed: set[int] = set()
        for img in data.get("images", []) or []:
            try:
                listed.add(int(img["id"]))
                file_sizes[int(img["id"])] = (int(img["height"]), int(img["width"]))
            except (KeyError, TypeError, ValueError):
                continue  # sizes are optional here; the RLE size check below still applies
        annotated: set[int] = set()
        self._file_ids[path] = (annotated, listed)
        for i, ann in enumerate(data["annotations"]):
            record = f"annotations[{i}] (id {ann.get('id')})"
            try:
                image_id = int(ann["image_id"])
            except (KeyError, TypeError, ValueError):
                self._preflight.append(
                    quarantine_row(SOURCE, path, record, None, "annotation has no valid image_id")
                )
                continue
            annotated.add(image_id)
            if image_id not in sizes:
                self._preflight.append(
                    quarantine_row(
                        SOURCE,
                        path,
                        record,
                        image_id,
                        f"annotation for unknown image_id {image_id} (not in the images table)",
                    )
                )
                continue
            cname = cats.get(ann.get("category_id"))
            if cname is None:
                self._preflight.append(
                    quarantine_row(
                        SOURCE,
                        path,
                        record,
                        image_id,
                        f"unknown category_id {ann.get('category_id')!r}",
                    )
                )
                continue
            if ann.get("iscrowd", 0) and not self.include_crowd:
                continue  # excluded by configuration (detection.include_crowd), not by accident
            declared = file_sizes.get(image_id)
            if declared is not None and declared != sizes[image_id]:
                h, w = sizes[image_id]
                self._preflight.append(
                    quarantine_row(
                        SOURCE,
                        path,
                        record,
                        image_id,
                        f"mask size {declared[0]}x{declared[1]} (images entry of the instances "
                        f"file) disagrees with image size {h}x{w} in the images table",
                    )
                )
                continue
            self._by_image[image_id].append((cname, i, ann | {"_file": str(path)}))

    def _check_coverage(self, table_ids: set[int]) -> None:
        """Stop when no image of the table has an annotation; warn when some are in no file.

        Zero is an error, not a result: instances files of another dataset (a Flickr images
        table with COCO's instances, the val file for the train split) would otherwise give
        only ``no_detections`` rows and a run that "succeeds" without a single mask. Every
        COCO instances file, and the embedded dataset's, lists each of its images in
        ``images`` (with or without annotations), so on a correct set of files every image of
        the table appears in one of them; an image that appears nowhere is a file missing from
        ``dataset.instances`` and is warned about.

        Raises:
            DetectionConfigError: no image of the table is annotated in any instances file.
        """
        if not table_ids:
            return
        annotated = set().union(*(a for a, _ in self._file_ids.values())) & table_ids
        if not annotated:
            files = "; ".join(
                f"instances file {path} has annotations for image ids {_few(a)}"
                if a
                else f"instances file {path} has no annotation"
                for path, (a, _) in self._file_ids.items()
            )
            raise DetectionConfigError(
                "detection.backend=annotations: none of the images of the images table has an "
                f"annotation in dataset.instances, so every image would have no detections: "
                f"images {_few(table_ids)}; {files}. Are dataset.instances the instances "
                "files of this dataset (and split)?"
            )
        logger.info(
            "detection.backend=annotations: %d of the %d images of the images table (%.1f%%) "
            "have annotations",
            len(annotated),
            len(table_ids),
            100.0 * len(annotated) / len(table_ids),
        )
        known = set().union(*(a | listed for a, listed in self._file_ids.values()))
        absent = table_ids - known
        if absent:
            share = 1.0 - len(absent) / len(table_ids)
            logger.warning(
                "detection.backend=annotations: only %d of the %d images of the images table "
                "(%.1f%%) appear in dataset.instances (%s); the other %d (image ids %s) appear "
                "in no instances file and get no detections. Is an instances file missing "
                "(e.g. one split's)?",
                len(table_ids) - len(absent),
                len(table_ids),
                100.0 * share,
                ", ".join(str(p) for p in self.paths),
                len(absent),
                _few(absent),
            )

    def preflight_quarantine(self) -> list[dict[str, Any]]:
        """Annotations for unknown images or categories, or with disagreeing image sizes."""
        return list(self._preflight)

    def fingerprint(self) -> dict[str, Any]:
        """Files (with size and mtime, so edited files start fresh shards) and crowd setting."""
        files = [
            {"path": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
            for p in self.paths
        ]
        return {"backend": self.name, "instances": files, "include_crowd": self.include_crowd}

    @property
    def categories(self) -> list[str]:
        """Class names of all instances files, in category-id order."""
        return [self._categories[k] for k in sorted(self._categories)]

    # -- detection ----------------------------------------------------------------------------
    @staticmethod
    def _to_rle(segm: Any, height: int, width: int) -> tuple[dict | None, str | None]:
        """COCO segmentation (polygons / RLE) -> compressed RLE at ``height × width``.

        Mirrors ``pycocotools.coco.COCO.annToRLE`` but uses the images table's size and
        reports problems instead of crashing.

        Returns:
            ``(rle, None)`` or ``(None, reason)``.
        """
        if isinstance(segm, list):
            polys = [p for p in segm if isinstance(p, list)]
            if not polys or len(polys) != len(segm):
                return None, "segmentation is neither a polygon list nor an RLE dict"
            bad = [k for k, p in enumerate(polys) if len(p) < 6 or len(p) % 2]
            if bad:
                return None, f"invalid polygon(s) {bad}: need an even number >= 6 of coordinates"
            try:
                rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
            except (TypeError, ValueError) as err:
                return None, f"invalid polygon coordinates ({err})"
            return mask_utils.merge(rles), None
        if isinstance(segm, dict) and "counts" in segm and "size" in segm:
            size = [int(v) for v in segm["size"]]
            if size != [height, width]:
                return None, (
                    f"mask size {size[0]}x{size[1]} disagrees with image size "
                    f"{height}x{width} in the images table"
                )
            counts = segm["counts"]
            if isinstance(counts, list):  # uncompressed RLE (iscrowd regions)
                if sum(int(c) for c in counts) != height * width:
                    return None, f"uncompressed RLE does not sum to {height}x{width} pixels"
                return mask_utils.frPyObjects(segm, height, width), None
            if isinstance(counts, bytes):
                counts = counts.decode("ascii", errors="replace")
            if not isinstance(counts, str):
                return None, "RLE counts is neither a string nor a list"
            try:
                total = int(rle_string_to_counts(counts).sum())
            except (UnicodeEncodeError, ValueError):
                total = -1
            if total != height * width:
                return None, f"compressed RLE does not decode to {height}x{width} pixels"
            return {"size": size, "counts": counts.encode("ascii")}, None
        return None, "segmentation missing or of unknown format"

    def detect(
        self, records: Sequence[ImageRecord]
    ) -> tuple[list[ImageDetections], list[dict[str, Any]]]:
        """Instances of each image from the annotations (score 1, box from the mask)."""
        results: list[ImageDetections] = []
        quarantine: list[dict[str, Any]] = []
        for rec in records:
            names: list[str] = []
            rles: list[dict] = []
            for cname, index, ann in self._by_image.get(rec.image_id, []):
                rle, reason = self._to_rle(ann.get("segmentation"), rec.height, rec.width)
                if rle is not None and int(mask_utils.area(rle)) == 0:
                    rle, reason = None, "segmentation covers no pixel"
                if rle is None:
                    quarantine.append(
                        quarantine_row(
                            SOURCE,
                            ann["_file"],
                            f"annotations[{index}] (id {ann.get('id')})",
                            rec.image_id,
                            str(reason),
                        )
                    )
                    continue
                names.append(cname)
                rles.append(rle)
            if rles:
                xywh = np.asarray(mask_utils.toBbox(rles), dtype=np.float64).reshape(-1, 4)
                boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            else:
                boxes = np.zeros((0, 4))
            counts = [
                r["counts"].decode("utf-8") if isinstance(r["counts"], bytes) else r["counts"]
                for r in rles
            ]
            results.append(
                ImageDetections(
                    image_id=rec.image_id,
                    height=rec.height,
                    width=rec.width,
                    class_names=names,
                    scores=np.ones(len(names)),
                    boxes=boxes,
                    rle_counts=counts,
                )
            )
        return results, quarantine
