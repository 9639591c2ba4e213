"""Tiny COCO-format fixtures for the detection and matching tests (built in tmp_path).

Three PNG images with hand-placed masks stored the three ways COCO stores them: compressed RLE
(a string), polygons, and uncompressed RLE (``iscrowd``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 18, "name": "dog"},
    {"id": 88, "name": "teddy bear"},
    {"id": 100, "name": "circle"},
]
SIZES = {1: (32, 48), 2: (40, 40), 3: (24, 36)}  # image_id -> (H, W)


@dataclass
class Toy:
    root: Path
    images: pd.DataFrame
    captions: pd.DataFrame
    instances: Path
    masks: dict[tuple[int, int], np.ndarray]  # (image_id, annotation id) -> [H, W] uint8
    data: dict


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def compressed(m: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(m.shape), "counts": rle["counts"].decode("ascii")}


def uncompressed(m: np.ndarray) -> dict:
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.r_[0, change, flat.size]
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0, *runs]
    return {"size": list(m.shape), "counts": runs}


def build_toy(root: Path, captions: list[tuple[int, int, str]] | None = None) -> Toy:
    """Write images, an instances JSON and tables; masks are returned for reference."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for iid, (h, w) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{iid:06d}.png"
        )
        rows.append(
            {
                "image_id": iid,
                "file_path": f"images/{iid:06d}.png",
                "split": "train",
                "width": w,
                "height": h,
                "status": "ok",
            }
        )
    images = pd.DataFrame(rows)
    anns, masks = [], {}

    def add(aid, iid, cat, m, segm, crowd=0):
        anns.append(
            {
                "id": aid,
                "image_id": iid,
                "category_id": cat,
                "segmentation": segm,
                "area": float(m.sum()),
                "bbox": [0, 0, 1, 1],
                "iscrowd": crowd,
            }
        )
        masks[(iid, aid)] = m

    h, w = SIZES[1]
    m = rect(h, w, 0, 16, 0, 24)
    add(1, 1, 18, m, compressed(m))  # dog, top-left quarter
    m = rect(h, w, 16, 32, 24, 48)
    add(2, 1, 18, m, compressed(m))  # dog, bottom-right quarter
    # person as a polygon: rectangle rows 4..12, cols 30..46 (COCO polygon vertices at pixel
    # borders rasterise to exactly this rectangle)
    poly = [30, 4, 46, 4, 46, 12, 30, 12]
    m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w)))
    add(3, 1, 1, m, [poly])
    h, w = SIZES[2]
    m = rect(h, w, 10, 30, 5, 35)
    add(4, 2, 88, m, uncompressed(m), crowd=1)  # teddy bear as crowd (uncompressed RLE)
    # image 3 has no annotation: a "no_detections" row
    data = {
        "images": [{"id": i, "height": hh, "width": ww} for i, (hh, ww) in SIZES.items()],
        "annotations": anns,
        "categories": CATEGORIES,
    }
    inst = root / "instances.json"
    inst.write_text(json.dumps(data))
    caps = captions or [
        (11, 1, "two dogs and a man"),
        (12, 1, "a hot day in the park"),
        (13, 2, "a teddy bear on a bed"),
        (14, 3, "a dog in the snow"),
    ]
    cap_df = pd.DataFrame(
        {
            "caption_id": [c[0] for c in caps],
            "image_id": [c[1] for c in caps],
            "split": "train",
            "raw": [c[2] for c in caps],
            "tokens": [c[2].split() for c in caps],
        }
    )
    return Toy(root, images, cap_df, inst, masks, data)


def rewrite(toy: Toy, data: dict) -> None:
    """Replace the instances JSON (tests of bad inputs)."""
    toy.instances.write_text(json.dumps(data))
    toy.data = data
