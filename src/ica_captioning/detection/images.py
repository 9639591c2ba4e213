"""Reading an image for a model backend: its pixels, or the quarantine row saying why not."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import UnidentifiedImageError

from ica_captioning.data.images import load_rgb
from ica_captioning.data.tables import quarantine_row
from ica_captioning.detection.base import ImageRecord

SOURCE = "detection"


def read_detection_image(
    record: ImageRecord,
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """Decode an image as RGB and check its size against the ``images`` table.

    Pixels come from :func:`ica_captioning.data.images.load_rgb`, the conversion ingestion
    validated (transparency on white, 16-bit scaled), so the detector sees the image every other
    stage sees.

    Args:
        record: the image.

    Returns:
        ``(pixels, None)`` with ``pixels`` ``[H, W, 3]`` uint8, or ``(None, quarantine_row)``
        when the file is missing, fails to decode, or has a size other than the table's (its
        masks would not line up with the image the rest of the project sees).
    """
    try:
        pixels = np.asarray(load_rgb(record.path))
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
