"""Image decoding for the model backends; bad files become quarantine rows."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ica_captioning.data.images import to_rgb
from ica_captioning.detection.base import ImageRecord, quarantine_row

SOURCE = "detection"


def load_rgb(record: ImageRecord) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Decode an image as RGB and check its size against the ``images`` table.

    Args:
        record: the image.

    Returns:
        ``(pixels, None)`` with ``pixels`` ``[H, W, 3]`` uint8, or ``(None, quarantine_row)``
        when the file is missing, fails to decode, or has a size other than the table's (its
        masks would not line up with the image the rest of the project sees).
    """
    try:
        with Image.open(record.path) as img:
            img.load()
            # Same conversion as ingestion validated (transparency -> white, 16-bit scaled).
            pixels = np.asarray(to_rgb(img))
    except FileNotFoundError:
        return None, quarantine_row(
            SOURCE, record.path, str(record.image_id), record.image_id, "image file not found"
        )
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        return None, quarantine_row(
            SOURCE,
            record.path,
            str(record.image_id),
            record.image_id,
            f"image fails to decode: {type(err).__name__}: {err}",
        )
    height, width = pixels.shape[:2]
    if (height, width) != (record.height, record.width):
        return None, quarantine_row(
            SOURCE,
            record.path,
            str(record.image_id),
            record.image_id,
            f"image is {width}x{height} (WxH) but the images table says "
            f"{record.width}x{record.height}; masks would not match the image",
        )
    return pixels, None
