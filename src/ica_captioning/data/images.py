"""Image validation and RGB loading.

Every image listed by the annotations is opened and fully decoded once. Missing, empty,
unreadable, truncated or corrupt files (and files whose size contradicts the annotation) go to the
``quarantine`` table; images in another mode (grayscale, RGBA, CMYK, palette, 16-bit, ...) are
kept with ``status = "converted:<mode>"``.

Converted images are *not* rewritten: every stage loads pixels through :func:`load_rgb`, which
applies the same conversion (alpha composited on white, 16-bit scaled to 8 bits), so the
dataset folder stays untouched and COCO-sized sets need no second copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ica_captioning.data.tables import check_ceiling, quarantine_frame, quarantine_row

logger = logging.getLogger(__name__)

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB.

    Transparent pixels become white (rather than whatever colour hides under alpha 0), 16-bit
    and 32-bit grayscale are scaled to 0..255, everything else uses Pillow's conversion.

    Args:
        image: a loaded Pillow image.

    Returns:
        An ``RGB`` image of the same size.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _WIDE_MODES:
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            values = values / 257.0
        elif values.size and (values.max() > 255 or values.min() < 0):
            lo, hi = float(values.min()), float(values.max())
            values = (values - lo) * (255.0 / max(hi - lo, 1e-12))
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file and return it as RGB (see :func:`to_rgb`).

    Args:
        path: image file (``dataset.images_dir / images.file_path``).

    Returns:
        An ``RGB`` Pillow image, fully loaded (the file is closed).
    """
    with Image.open(path) as image:
        image.load()
        # An RGB file comes back as the opened image itself, which closing the file would
        # invalidate: copy it. Every other mode is converted into a new image already.
        return to_rgb(image).copy() if image.mode == "RGB" else to_rgb(image)


def inspect_image(
    path: str | os.PathLike, expected_size: tuple[int | None, int | None] = (None, None)
) -> dict[str, Any]:
    """Check one image file.

    Args:
        path: the image file.
        expected_size: ``(width, height)`` from the annotation, ``None`` where unknown.

    Returns:
        ``{"ok": bool, "status": "ok" | "converted:<mode>" | None, "width", "height",
        "reason": str | None}``.
    """
    path = Path(path)
    result: dict[str, Any] = {"ok": False, "status": None, "width": None, "height": None}

    def fail(reason: str) -> dict[str, Any]:
        return {**result, "reason": reason}

    try:
        if not path.exists():
            return fail("missing: file not found")
        if not path.is_file():
            return fail("unreadable: not a regular file")
        if path.stat().st_size == 0:
            return fail("empty file (0 bytes)")
        with Image.open(path) as image:
            mode = image.mode
            try:
                image.load()
            except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
                return fail(f"truncated or corrupt: {type(exc).__name__}: {exc}")
            width, height = image.size
            try:
                to_rgb(image)
            except Exception as exc:
                return fail(f"cannot convert mode {mode} to RGB: {exc}")
    except UnidentifiedImageError:
        return fail("unreadable: not a recognised image file")
    except Image.DecompressionBombError as exc:
        return fail(f"unreadable: {exc}")
    except OSError as exc:
        return fail(f"unreadable: {type(exc).__name__}: {exc}")
    expected_w, expected_h = expected_size
    if (expected_w is not None and expected_w != width) or (
        expected_h is not None and expected_h != height
    ):
        return fail(f"image is {width}x{height} but the annotation says {expected_w}x{expected_h}")
    status = "ok" if mode == "RGB" else f"converted:{mode}"
    return {"ok": True, "status": status, "width": width, "height": height, "reason": None}


def _inspect_job(job: tuple[str, Any, Any]) -> dict[str, Any]:
    path, w, h = job
    return inspect_image(path, (w, h))


def validate_images(
    images: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    num_workers: int,
    max_bad_fraction: float,
    check_size: bool,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate every image of an ``images`` table.

    Files are decoded by a thread pool (Pillow releases the GIL while decoding) and results
    stream through a tqdm progress bar.

    Args:
        images: ``images`` table from a reader (``width``/``height`` may be null).
        images_dir: folder that ``file_path`` is relative to.
        num_workers: decoding threads (0: one per CPU).
        max_bad_fraction: ceiling of quarantined images; above it ``DataQualityError``
            (``ingestion.max_bad_fraction``).
        check_size: quarantine images whose size differs from the annotation's.
        progress: show a progress bar.

    Returns:
        ``(images, quarantine)``: the usable images with ``width``, ``height`` (from the file)
        and ``status``; one quarantine row per bad image.

    Raises:
        DataQualityError: more than ``max_bad_fraction`` of the images are bad.
    """
    root = Path(images_dir)
    widths = images["width"] if check_size else pd.Series([None] * len(images))
    heights = images["height"] if check_size else pd.Series([None] * len(images))
    jobs = [
        (str(root / fp), None if pd.isna(w) else int(w), None if pd.isna(h) else int(h))
        for fp, w, h in zip(images["file_path"], widths, heights)
    ]
    workers = num_workers or os.cpu_count() or 1
    results: list[dict[str, Any]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        iterator: Iterator[dict[str, Any]] = pool.map(_inspect_job, jobs, chunksize=64)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, total=len(jobs), desc="validating images", unit="img")
        results = list(iterator)

    ok = np.array([r["ok"] for r in results], dtype=bool)
    out = images.loc[ok].copy()
    out["width"] = np.array([r["width"] for r in results if r["ok"]], dtype=np.int64)
    out["height"] = np.array([r["height"] for r in results if r["ok"]], dtype=np.int64)
    out["status"] = [r["status"] for r in results if r["ok"]]
    out = out.reset_index(drop=True)
    rows = [
        quarantine_row("image", job[0], str(image_id), image_id, r["reason"])
        for job, image_id, r in zip(jobs, images["image_id"], results)
        if not r["ok"]
    ]
    converted = out["status"].ne("ok").sum()
    logger.info(
        "Validated %d images: %d ok, %d converted, %d quarantined",
        len(jobs),
        len(out) - converted,
        converted,
        len(rows),
    )
    check_ceiling(
        len(rows),
        len(jobs),
        max_bad_fraction,
        "images",
        [f"{r['file']}: {r['reason']}" for r in rows],
    )
    return out, quarantine_frame(rows)
