"""COCO run-length encoding helpers (thin, vectorised wrappers around pycocotools).

Masks travel between stages as COCO *compressed* RLE ``counts`` strings (utf-8), together with
the mask's ``height`` and ``width``; dense arrays exist only inside a stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks: np.ndarray) -> list[str]:
    """Encode binary masks as COCO compressed RLE strings.

    Args:
        masks: ``[N, H, W]`` (or one ``[H, W]``) array; non-zero means "inside".

    Returns:
        ``N`` compressed RLE ``counts`` strings (utf-8), in order.
    """
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"encode_masks expects [N, H, W] masks, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants [H, W, N] uint8 in Fortran (column-major) order.
    fortran = np.asfortranarray(np.moveaxis(masks != 0, 0, -1).astype(np.uint8))
    return [rle["counts"].decode("utf-8") for rle in mask_utils.encode(fortran)]


def to_rle_objects(counts: Sequence[str], height: int, width: int) -> list[dict]:
    """Build pycocotools RLE objects from ``counts`` strings of masks of one size.

    Args:
        counts: compressed RLE strings.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        ``[{"size": [H, W], "counts": bytes}, ...]``.
    """
    size = [int(height), int(width)]
    return [{"size": size, "counts": c.encode() if isinstance(c, str) else c} for c in counts]


def decode_masks(counts: Sequence[str], height: int, width: int) -> np.ndarray:
    """Decode compressed RLE strings of masks of one size.

    Args:
        counts: ``N`` compressed RLE strings.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        ``[N, H, W]`` uint8 array of 0/1.
    """
    if len(counts) == 0:
        return np.zeros((0, int(height), int(width)), dtype=np.uint8)
    dense = mask_utils.decode(to_rle_objects(counts, height, width))  # [H, W, N]
    return np.moveaxis(dense, -1, 0)


def union_rle(counts: Sequence[str], height: int, width: int) -> str:
    """Union (logical or) of several masks, computed in the RLE domain.

    Args:
        counts: one or more compressed RLE strings of ``[H, W]`` masks.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        The compressed RLE string of the union.
    """
    if len(counts) == 0:
        raise ValueError("union_rle needs at least one mask")
    if len(counts) == 1:
        return counts[0]
    merged = mask_utils.merge(to_rle_objects(counts, height, width), intersect=False)
    return merged["counts"].decode("utf-8")


def rle_areas(counts: Sequence[str], height: int, width: int) -> np.ndarray:
    """Pixel areas of compressed RLE masks.

    Returns:
        ``[N]`` int64 areas.
    """
    if len(counts) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(mask_utils.area(to_rle_objects(counts, height, width)), dtype=np.int64)


def rle_boxes(counts: Sequence[str], height: int, width: int) -> np.ndarray:
    """Tight boxes of compressed RLE masks.

    Returns:
        ``[N, 4]`` float64 boxes ``[x0, y0, x1, y1]`` in pixels (``x1 = x0 + w``).
    """
    if len(counts) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    xywh = np.asarray(mask_utils.toBbox(to_rle_objects(counts, height, width)), dtype=np.float64)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def rle_string_to_counts(counts: str | bytes) -> np.ndarray:
    """Decode a COCO compressed RLE string into run lengths (vectorised ``rleFrString``).

    The format (pycocotools ``maskApi.c``): each run length is stored as a variable-length
    sequence of 6-bit characters offset by 48; bit 5 (``0x20``) says "more characters follow",
    bits 0-4 carry the value (least significant group first), bit 4 of the last character is the
    sign; from the third run on, values are deltas to the run two places earlier.

    Args:
        counts: the compressed ``counts`` string (str or bytes).

    Returns:
        ``[R]`` int64 run lengths, alternating zeros and ones, starting with zeros.

    Raises:
        ValueError: the string is not a valid compressed RLE.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError("compressed RLE contains characters outside '0'..'o'")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise ValueError("compressed RLE is truncated (last character says more follow)")
    ends = np.flatnonzero(~more)  # index of the last character of every value
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)  # [C] value index of each char
    shift = 5 * (np.arange(chars.size) - starts[group])  # [C] bit offset of each char
    values = np.add.reduceat((chars & 0x1F) << shift, starts)  # [R]
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values | (-1 << (shift[ends] + 5)), values)
    # Undo the delta coding: counts[m] = x[m] + counts[m - 2] for m > 2.
    out = values.copy()
    out[1::2] = np.cumsum(values[1::2])
    out[2::2] = np.cumsum(values[2::2])
    if (out < 0).any():
        raise ValueError("compressed RLE decodes to a negative run length")
    return out
