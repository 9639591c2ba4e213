"""A generated dataset's file layout, the configuration that determines it, its freshness check.

``generator.json`` holds the configuration (with a fingerprint of the generator's source); a
dataset whose manifest differs from the wanted configuration is regenerated.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ica_captioning.data import text as _text_module
from ica_captioning.data.synthetic.world import SceneSettings

SPLITS = ("train", "val", "test")
KARPATHY_FILE = "dataset_synthetic.json"
MANIFEST_FILE = "generator.json"
IMAGES_SUBDIR = "images"
ANNOTATIONS_SUBDIR = "annotations"
IMAGE_FORMATS = ("png", "jpg")


def _source_fingerprint() -> str:
    """sha256 (16 hex digits) of the code that determines the generated files.

    Every module of this package (sorted by name) and the tokeniser are hashed, so editing any
    of them regenerates the dataset (about 7 s); a hand-maintained version number once stayed
    unchanged while the drawing and caption code changed, and stale files were silently kept.
    """
    digest = hashlib.sha256()
    for path in [*sorted(Path(__file__).parent.glob("*.py")), Path(_text_module.__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


GENERATOR_SOURCE = _source_fingerprint()


def _split_counts(num_images: int, fractions: dict[str, float]) -> dict[str, int]:
    """Images per split; rounding is absorbed by ``train`` so the counts add up."""
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"split fractions: unknown split(s) {sorted(unknown)}; use {SPLITS}")
    total = sum(float(fractions.get(s, 0.0)) for s in SPLITS)
    if total <= 0:
        raise ValueError("split fractions must add up to a positive number")
    counts = {s: int(round(num_images * float(fractions.get(s, 0.0)) / total)) for s in SPLITS}
    counts["train"] = num_images - counts["val"] - counts["test"]
    if counts["train"] < 0:
        raise ValueError(f"split fractions {fractions} leave no room for train")
    return counts


def generator_config(
    *,
    num_images: int,
    image_size: int,
    seed: int,
    split_fractions: dict[str, float],
    captions_per_image: int,
    image_format: str,
    polygon_fraction: float,
    scene: dict[str, Any],
) -> dict[str, Any]:
    """The parameters that determine the generated files (stored in ``generator.json``).

    The arguments are those of :func:`~ica_captioning.data.synthetic.writer.generate_dataset`
    less ``num_workers`` / ``progress`` (which do not change the files); their values live in
    conf/base/parameters_ingestion.yml (``ingestion.synthetic``).

    Returns:
        The validated configuration, with the source fingerprint and per-split image counts.

    Raises:
        ValueError: a parameter is out of range.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    SceneSettings.from_params(scene)  # raises on out-of-range scene settings
    return {
        "generator_source": GENERATOR_SOURCE,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "split_counts": _split_counts(int(num_images), split_fractions),
        "captions_per_image": int(captions_per_image),
        "image_format": image_format,
        "polygon_fraction": float(polygon_fraction),
        # JSON round trip: the manifest compares equal to the config read back from disk.
        "scene": json.loads(json.dumps(scene)),
    }


def dataset_files(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Paths of the files the generator writes under ``out_dir``."""
    out = Path(out_dir)
    ann = out / ANNOTATIONS_SUBDIR
    return {
        "karpathy": out / KARPATHY_FILE,
        "captions": {s: ann / f"captions_{s}.json" for s in SPLITS},
        "instances": {s: ann / f"instances_{s}.json" for s in SPLITS},
        "images_dir": out / IMAGES_SUBDIR,
        "manifest": out / MANIFEST_FILE,
    }


def is_up_to_date(out_dir: str | os.PathLike, config: dict[str, Any]) -> bool:
    """Whether ``out_dir`` holds a complete dataset generated with ``config``."""
    files = dataset_files(out_dir)
    try:
        manifest = json.loads(files["manifest"].read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("config") != config:
        return False
    paths = [files["karpathy"], *files["captions"].values(), *files["instances"].values()]
    if not all(p.is_file() for p in paths):
        return False
    images = files["images_dir"]
    ext = config["image_format"]
    return all((images / f"{i + 1:06d}.{ext}").is_file() for i in range(int(config["num_images"])))
