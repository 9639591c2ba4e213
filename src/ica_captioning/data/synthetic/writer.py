"""Writing the dataset: images, Karpathy split JSON, COCO captions/instances and the manifest."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ica_captioning.data.synthetic.manifest import (
    IMAGES_SUBDIR,
    SPLITS,
    dataset_files,
    generator_config,
)
from ica_captioning.data.synthetic.scenes import render_scene
from ica_captioning.data.synthetic.world import CATEGORY_IDS, CLASSES, SceneSettings
from ica_captioning.data.text import tokenize

logger = logging.getLogger(__name__)

#: The ``info`` block of the COCO files. Its ``version`` is fixed: changes of the generator are
#: tracked by the source fingerprint in ``generator.json``, not by the files' contents.
COCO_INFO = {
    "description": "ICA captioning embedded synthetic dataset",
    "version": "1",
    "year": 2024,
    "contributor": "ica_captioning.data.synthetic",
    "url": "",
    "date_created": "",
}
COCO_LICENSES = [{"id": 1, "name": "generated", "url": ""}]

#: One image's work: (index, image_size, seed, captions, image_format, polygon_fraction, dir,
#: scene settings).
ImageJob = tuple[int, int, int, int, str, float, str, SceneSettings]


def _image_record(job: ImageJob) -> dict[str, Any]:
    """Worker: render one image, write it, return its annotation data (picklable)."""
    index, image_size, seed, n_captions, image_format, polygon_fraction, images_dir, settings = job
    scene = render_scene(index, image_size, seed, n_captions, settings)
    cocoid = index + 1
    file_name = f"{cocoid:06d}.{image_format}"
    image = Image.fromarray(scene.pixels, mode="RGB")
    if image_format == "png":
        image.save(os.path.join(images_dir, file_name), format="PNG", optimize=False)
    else:
        image.save(os.path.join(images_dir, file_name), format="JPEG", quality=95)
    # Polygons only where they describe the visible pixels (unoccluded polygonal objects); the
    # choice uses its own stream so it never changes the scene. Mentioned objects come first, so
    # their choices do not depend on the distractors.
    choose = np.random.default_rng([seed, index, 1])
    instances = []
    for obj in [*scene.objects, *scene.distractors]:
        visible = np.asfortranarray(obj.visible_mask.astype(np.uint8))
        rle = mask_utils.encode(visible)
        area = float(mask_utils.area(rle))
        x0, y0, w, h = (float(v) for v in mask_utils.toBbox(rle))
        use_polygon = (
            obj.polygon is not None
            and bool((obj.visible_mask == obj.full_mask).all())
            and choose.random() < polygon_fraction
        )
        segmentation: Any
        if use_polygon:
            segmentation = [obj.polygon]
        else:
            segmentation = {"size": [image_size, image_size], "counts": rle["counts"].decode()}
        instances.append(
            {
                "category_id": CATEGORY_IDS[obj.class_name],
                "segmentation": segmentation,
                "area": area,
                "bbox": [x0, y0, w, h],
                "iscrowd": 0,
                "attributes": {
                    "colour": obj.colour,
                    "size": obj.size,
                    "mentioned": obj.mentioned,
                },
            }
        )
    return {
        "cocoid": cocoid,
        "file_name": file_name,
        "captions": scene.captions,
        "instances": instances,
    }


def _annotation_documents(
    records: Sequence[dict[str, Any]], split_counts: dict[str, int], image_size: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The Karpathy document and each split's COCO captions and instances documents.

    Images go to the splits in index order (train first); caption ids are the Karpathy
    ``sentid`` and image ids the ``cocoid``, so both formats give the same tables.
    """
    split_of = []
    for split in SPLITS:
        split_of += [split] * split_counts[split]
    karpathy_images = []
    coco: dict[str, dict[str, list]] = {
        s: {"images": [], "captions": [], "instances": []} for s in SPLITS
    }
    sentid = 1
    ann_id = 1
    for index, (record, split) in enumerate(zip(records, split_of)):
        cocoid = record["cocoid"]
        sentences = []
        for raw in record["captions"]:
            sentences.append(
                {"tokens": tokenize(raw), "raw": raw, "imgid": index, "sentid": sentid}
            )
            coco[split]["captions"].append({"id": sentid, "image_id": cocoid, "caption": raw})
            sentid += 1
        karpathy_images.append(
            {
                "filepath": IMAGES_SUBDIR,
                "filename": record["file_name"],
                "imgid": index,
                "cocoid": cocoid,
                "split": split,
                "sentids": [s["sentid"] for s in sentences],
                "sentences": sentences,
            }
        )
        coco[split]["images"].append(
            {
                "id": cocoid,
                "file_name": record["file_name"],
                "width": image_size,
                "height": image_size,
                "license": 1,
            }
        )
        for inst in record["instances"]:
            coco[split]["instances"].append({"id": ann_id, "image_id": cocoid, **inst})
            ann_id += 1

    categories = [
        {"id": CATEGORY_IDS[c.name], "name": c.name, "supercategory": "shape"} for c in CLASSES
    ]
    captions, instances = {}, {}
    for split in SPLITS:
        base = {"info": COCO_INFO, "licenses": COCO_LICENSES, "images": coco[split]["images"]}
        captions[split] = {**base, "annotations": coco[split]["captions"]}
        instances[split] = {
            **base,
            "annotations": coco[split]["instances"],
            "categories": categories,
        }
    return {"images": karpathy_images, "dataset": "synthetic"}, captions, instances


def _dump_json(data: Any, path: Path) -> None:
    # Fixed separators, key order and ASCII-escaping: byte-identical output for the same data.
    path.write_text(json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n")


def _collect(
    iterator: Iterable[dict[str, Any]], total: int, progress: bool
) -> list[dict[str, Any]]:
    """The worker results in order, behind a tqdm bar when ``progress``."""
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total, desc="generating synthetic images", unit="img")
    return list(iterator)


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    num_images: int,
    image_size: int,
    seed: int,
    split_fractions: dict[str, float],
    captions_per_image: int,
    image_format: str,
    polygon_fraction: float,
    scene: dict[str, Any],
    num_workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the embedded dataset into ``out_dir`` (overwriting what is there).

    The values of the generator's parameters live in conf/base/parameters_ingestion.yml
    (``ingestion.synthetic``); every one must be given.

    Args:
        out_dir: output folder (the ``dataset.images_dir`` of the generated set).
        num_images: number of images.
        image_size: side of the square images in pixels.
        seed: seed; the same parameters give byte-identical annotation files.
        split_fractions: ``{train, val, test}`` fractions; images are assigned in index order
            (train first).
        captions_per_image: captions per image.
        image_format: ``png`` (lossless: masks match pixels exactly) or ``jpg``.
        polygon_fraction: chance that an unoccluded polygonal object is stored as a polygon
            instead of RLE (both kinds appear in real COCO files).
        scene: what a scene may contain (``ingestion.synthetic.scene``; ``SceneSettings``).
        num_workers: worker processes (1 = in this process); the output does not depend on it.
        progress: show a tqdm progress bar.

    Returns:
        A summary: ``config`` and the written ``files`` (as strings).

    Raises:
        ValueError: a parameter is out of range (see ``generator_config``).
    """
    config = generator_config(
        num_images=num_images,
        image_size=image_size,
        seed=seed,
        split_fractions=split_fractions,
        captions_per_image=captions_per_image,
        image_format=image_format,
        polygon_fraction=polygon_fraction,
        scene=scene,
    )
    settings = SceneSettings.from_params(scene)
    files = dataset_files(out_dir)
    files["images_dir"].mkdir(parents=True, exist_ok=True)
    files["captions"]["train"].parent.mkdir(parents=True, exist_ok=True)
    # A previous, larger generation leaves images that no annotation lists: remove them (only
    # files named as this generator names them).
    stale = re.compile(r"^(\d{6})\.(png|jpg)$")
    for path in files["images_dir"].iterdir():
        match = stale.match(path.name)
        if match and (int(match.group(1)) > num_images or match.group(2) != image_format):
            path.unlink()
    jobs: list[ImageJob] = [
        (
            i,
            config["image_size"],
            config["seed"],
            config["captions_per_image"],
            image_format,
            config["polygon_fraction"],
            str(files["images_dir"]),
            settings,
        )
        for i in range(num_images)
    ]
    if num_workers > 1 and num_images >= 8 * num_workers:
        # "spawn"-safe: the worker is a module-level function; chunks keep the overhead low.
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            iterator = pool.imap(
                _image_record, jobs, chunksize=max(1, num_images // (8 * num_workers))
            )
            records = _collect(iterator, num_images, progress)
    else:
        records = _collect(map(_image_record, jobs), num_images, progress)

    karpathy, captions, instances = _annotation_documents(
        records, config["split_counts"], image_size
    )
    _dump_json(karpathy, files["karpathy"])
    for split in SPLITS:
        _dump_json(captions[split], files["captions"][split])
        _dump_json(instances[split], files["instances"][split])
    summary = {
        "config": config,
        "files": {
            "karpathy": str(files["karpathy"]),
            "captions": {s: str(p) for s, p in files["captions"].items()},
            "instances": {s: str(p) for s, p in files["instances"].items()},
            "images_dir": str(files["images_dir"]),
        },
    }
    # Written last: its presence with a matching config means the set is complete.
    _dump_json(summary, files["manifest"])
    logger.info(
        "Generated %d synthetic images (%s) with %d captions and %d instances in %s",
        num_images,
        config["split_counts"],
        sum(len(doc["annotations"]) for doc in captions.values()),
        sum(len(doc["annotations"]) for doc in instances.values()),
        out_dir,
    )
    return summary
