"""Rasterising one shape into a mask (and, for polygonal shapes, its COCO polygon)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

#: The classes drawn as polygons (the others are made of ellipses and have no polygon).
POLYGON_SHAPES = ("square", "triangle", "star", "heart", "cross", "diamond")


def _regular_star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Five-pointed star, point up: 10 vertices alternating radius ``r`` and ``0.45 r``."""
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else 0.45 * r
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The classic parametric heart curve, sampled at 48 points and scaled to ``r``."""
    t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    scale = r / 16.5
    # The curve spans y in [-17, 12]; centre it vertically and flip (image y grows downwards).
    return [(cx + scale * a, cy - scale * (b + 2.5)) for a, b in zip(x.tolist(), y.tolist())]


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Plus sign with arms ``0.64 r`` wide (12 vertices)."""
    t = 0.32 * r
    return [
        (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
        (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
        (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
    ]  # fmt: skip


def _shape_polygon(class_name: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices ``(x, y)`` in pixels of a polygonal class (one of ``POLYGON_SHAPES``)."""
    if class_name == "square":
        s = 0.85 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if class_name == "triangle":
        return [(cx, cy - r), (cx + 0.97 * r, cy + 0.8 * r), (cx - 0.97 * r, cy + 0.8 * r)]
    if class_name == "star":
        return _regular_star(cx, cy, r)
    if class_name == "heart":
        return _heart(cx, cy, r)
    if class_name == "cross":
        return _cross(cx, cy, r)
    if class_name == "diamond":
        return [(cx, cy - r), (cx + 0.62 * r, cy), (cx, cy + r), (cx - 0.62 * r, cy)]
    raise ValueError(f"{class_name!r} is not a polygonal shape")


def draw_shape_mask(
    class_name: str, center: tuple[float, float], radius: float, image_size: int
) -> tuple[np.ndarray, list[float] | None]:
    """Rasterise one shape (no anti-aliasing; polygons with the COCO rasteriser).

    Args:
        class_name: one of ``CLASS_NAMES``.
        center: ``(x, y)`` in pixels.
        radius: half-extent in pixels.
        image_size: side S of the square image.

    Returns:
        ``([S, S] bool mask, polygon)``; the polygon (flat ``[x0, y0, ...]``) is ``None`` for the
        curved shapes (circle, ring, crescent moon).
    """
    cx, cy = center
    r = radius
    canvas = Image.new("1", (image_size, image_size), 0)
    draw = ImageDraw.Draw(canvas)
    polygon: list[float] | None = None
    if class_name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif class_name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        q = 0.6 * r
        draw.ellipse([cx - q, cy - q, cx + q, cy + q], fill=0)
    elif class_name == "crescent moon":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
        ox, oy, q = cx + 0.5 * r, cy - 0.2 * r, 0.85 * r
        draw.ellipse([ox - q, oy - q, ox + q, oy + q], fill=0)
    else:
        # Polygons are rasterised by pycocotools itself, so a polygon written to the instances
        # file decodes to exactly the pixels drawn.
        points = _shape_polygon(class_name, cx, cy, r)
        polygon = [round(v, 2) for point in points for v in point]
        rle = mask_utils.merge(mask_utils.frPyObjects([polygon], image_size, image_size))
        return mask_utils.decode(rle).astype(bool), polygon
    return np.array(canvas, dtype=bool), polygon
