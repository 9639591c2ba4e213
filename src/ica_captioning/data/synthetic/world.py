"""What the images show: the shape classes, colours and sizes, and the scene records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ShapeClass:
    """A class of the embedded dataset: COCO category name, plural and caption synonyms."""

    name: str
    plural: str
    synonyms: tuple[str, ...] = ()


#: The classes and words of docs/contracts.md ("embedded dataset classes"); the matching lexicon
#: relies on exactly these words. Synonyms are only used in the singular.
CLASSES: tuple[ShapeClass, ...] = (
    ShapeClass("circle", "circles", ("disc", "disk")),
    ShapeClass("square", "squares", ("block",)),
    ShapeClass("triangle", "triangles"),
    ShapeClass("star", "stars"),
    ShapeClass("heart", "hearts"),
    ShapeClass("cross", "crosses", ("plus",)),
    ShapeClass("diamond", "diamonds", ("rhombus",)),
    ShapeClass("ring", "rings", ("hoop",)),
    ShapeClass("crescent moon", "crescent moons", ("moon", "crescent")),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
#: COCO category ids (1-based, in ``CLASSES`` order).
CATEGORY_IDS: dict[str, int] = {c.name: i + 1 for i, c in enumerate(CLASSES)}

#: Object colours (RGB). None of them is close to the grey backgrounds.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 225, 30),
    "orange": (250, 135, 20),
    "purple": (135, 45, 185),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

#: Size classes: (name, min, max) of the shape's half-extent as a fraction of the image side.
SIZES: tuple[tuple[str, float, float], ...] = (
    ("small", 0.085, 0.11),
    ("medium", 0.125, 0.15),
    ("large", 0.17, 0.205),
)


@dataclass
class SceneObject:
    """One drawn object.

    Attributes:
        class_name: ``categories[].name`` of the object.
        colour: colour name (key of ``COLOURS``).
        size: ``small`` / ``medium`` / ``large``.
        center: ``(x, y)`` in pixels.
        radius: half-extent in pixels.
        full_mask: ``[H, W]`` bool, the whole shape.
        visible_mask: ``[H, W]`` bool, the pixels not covered by objects drawn later.
        polygon: vertices ``[x0, y0, x1, y1, ...]`` for polygonal shapes, else ``None``.
    """

    class_name: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    full_mask: np.ndarray = field(repr=False)
    visible_mask: np.ndarray = field(repr=False)
    polygon: list[float] | None = None


@dataclass
class Scene:
    """One rendered image: ``pixels`` ``[H, W, 3]`` uint8, objects in drawing order, captions."""

    index: int
    pixels: np.ndarray = field(repr=False)
    background: int
    objects: list[SceneObject]
    captions: list[str]
