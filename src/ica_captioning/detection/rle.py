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


def rle_strings_to_counts(counts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Decode many compressed RLE strings at once (vectorised over all of them).

    Args:
        counts: ``K`` compressed RLE strings.

    Returns:
        ``runs`` ``[V]`` int64 run lengths of all strings, concatenated, and ``owner`` ``[V]``
        int64: the index of the string each run belongs to (non-decreasing).

    Raises:
        ValueError: a string is not a valid compressed RLE (names its index).
    """
    pieces = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in counts]
    lens = np.array([len(p) for p in pieces], dtype=np.int64)
    chars = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63:
        bad = np.searchsorted(
            np.cumsum(lens), np.flatnonzero((chars < 0) | (chars > 63))[0], "right"
        )
        raise ValueError(f"compressed RLE {bad} contains characters outside '0'..'o'")
    more = (chars & 0x20) != 0
    last = np.cumsum(lens)[lens > 0] - 1
    if more[last].any():
        bad = np.flatnonzero(lens > 0)[np.flatnonzero(more[last])[0]]
        raise ValueError(f"compressed RLE {bad} is truncated (last character says more follow)")
    ends = np.flatnonzero(~more)  # last character of every value
    starts = np.concatenate([[0], ends[:-1] + 1])
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = 5 * (np.arange(chars.size) - starts[group])
    values = np.add.reduceat((chars & 0x1F) << shift, starts)  # [V]
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values | (-1 << (shift[ends] + 5)), values)
    owner = np.searchsorted(np.cumsum(lens), ends, side="right")  # [V] string of each value
    first = np.searchsorted(owner, np.arange(len(pieces)))  # first value of each string
    m = np.arange(values.size) - first[owner]  # index of the value inside its string
    # Delta coding: counts[m] = x[m] + counts[m - 2] for m > 2, i.e. running sums along two
    # chains per string (odd m; even m >= 2), with m = 0 on its own.
    chain = owner * 3 + np.where(m % 2 == 1, 1, np.where(m == 0, 0, 2))
    order = np.argsort(chain, kind="stable")
    xs = values[order]
    total = np.cumsum(xs)
    new = np.r_[True, chain[order][1:] != chain[order][:-1]]
    base = np.maximum.accumulate(np.where(new, np.arange(xs.size), 0))
    before = np.where(base > 0, total[base - 1], 0)
    runs = np.empty_like(values)
    runs[order] = total - before
    if (runs < 0).any():
        bad = owner[np.flatnonzero(runs < 0)[0]]
        raise ValueError(f"compressed RLE {bad} decodes to a negative run length")
    return runs, owner
