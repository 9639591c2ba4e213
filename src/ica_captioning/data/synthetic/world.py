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

#: Names of the size classes of mentioned objects, smallest first (``SceneSettings.sizes``).
SIZE_NAMES: tuple[str, ...] = ("small", "medium", "large")


@dataclass(frozen=True)
class SceneSettings:
    """What a scene may contain: ``ingestion.synthetic.scene`` (conf/base/parameters_ingestion.yml).

    Each group of settings draws from its own random stream, so changing one of them changes
    what it should and nothing else (the background does not move objects; distractors do not
    change the mentioned objects or the captions, apart from the phrases that count shapes).

    Attributes:
        object_count_p: probabilities of 1, 2, ... mentioned objects per image.
        repeat_p: chance that a new mentioned object repeats the class and colour of an earlier
            one (several instances of a class: "two red circles").
        sizes: ``(name, min, max)`` half-extent of mentioned objects as a fraction of the image
            side, for ``small`` / ``medium`` / ``large``.
        min_visible_fraction: a mentioned object keeps at least this share of its pixels
            visible (lower = more partial occlusion).
        texture_strength: standard deviation (grey levels) of a smooth random background field.
        texture_cells: the field is a ``cells × cells`` random grid, upsampled bicubically.
        noise_std: standard deviation (grey levels) of per-pixel background noise.
        distractor_count_p: probabilities of 0, 1, ... distractors: small objects drawn behind
            the mentioned ones that no caption mentions.
        distractor_size: ``(min, max)`` half-extent of distractors (fraction of the image side).
        distractor_same_shape_p: chance that a scene's first distractor has the class of a
            mentioned object and a colour no mentioned object of that class has.
        distractor_min_visible_fraction: a distractor keeps at least this share visible.
    """

    object_count_p: tuple[float, ...]
    repeat_p: float
    sizes: tuple[tuple[str, float, float], ...]
    min_visible_fraction: float
    texture_strength: float
    texture_cells: int
    noise_std: float
    distractor_count_p: tuple[float, ...]
    distractor_size: tuple[float, float]
    distractor_same_shape_p: float
    distractor_min_visible_fraction: float

    @classmethod
    def from_params(cls, scene: dict) -> SceneSettings:
        """Settings from the ``ingestion.synthetic.scene`` mapping (every key required)."""
        background, distractors = scene["background"], scene["distractors"]
        settings = cls(
            object_count_p=tuple(float(p) for p in scene["object_count_p"]),
            repeat_p=float(scene["repeat_p"]),
            sizes=tuple(
                (name, float(scene["sizes"][name][0]), float(scene["sizes"][name][1]))
                for name in SIZE_NAMES
            ),
            min_visible_fraction=float(scene["min_visible_fraction"]),
            texture_strength=float(background["texture_strength"]),
            texture_cells=int(background["texture_cells"]),
            noise_std=float(background["noise_std"]),
            distractor_count_p=tuple(float(p) for p in distractors["count_p"]),
            distractor_size=(float(distractors["size"][0]), float(distractors["size"][1])),
            distractor_same_shape_p=float(distractors["same_shape_p"]),
            distractor_min_visible_fraction=float(distractors["min_visible_fraction"]),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ``ValueError`` naming the ``ingestion.synthetic.scene`` key out of range."""
        key = "ingestion.synthetic.scene"
        for name, probs in (
            ("object_count_p", self.object_count_p),
            ("distractors.count_p", self.distractor_count_p),
        ):
            if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"{key}.{name} must be probabilities that add up to 1: {probs}")
        ranges = [(f"sizes.{n}", lo, hi) for n, lo, hi in self.sizes]
        ranges.append(("distractors.size", *self.distractor_size))
        for name, lo, hi in ranges:
            if not 0 < lo <= hi < 0.5:
                raise ValueError(f"{key}.{name} must be [min, max] with 0 < min <= max < 0.5")
        if self.texture_cells < 2:
            raise ValueError(f"{key}.background.texture_cells must be >= 2")

    @property
    def mentioned_max(self) -> int:
        """Most mentioned objects in one image."""
        return len(self.object_count_p)


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
        mentioned: whether captions describe it (``False`` for distractors).
    """

    class_name: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    full_mask: np.ndarray = field(repr=False)
    visible_mask: np.ndarray = field(repr=False)
    polygon: list[float] | None = None
    mentioned: bool = True


@dataclass
class Scene:
    """One rendered image.

    Attributes:
        index: image index.
        pixels: ``[H, W, 3]`` uint8.
        background: mean grey level of the background.
        objects: the mentioned objects, in drawing order (drawn over the distractors).
        captions: the captions (they describe ``objects`` only).
        distractors: unmentioned objects, in drawing order (drawn first, behind ``objects``).
    """

    index: int
    pixels: np.ndarray = field(repr=False)
    background: int
    objects: list[SceneObject]
    captions: list[str]
    distractors: list[SceneObject] = field(default_factory=list)
