"""The embedded dataset: a small, deterministic captioning world in the real file formats.

Each image shows 1-4 flat-coloured shapes (nine COCO-style classes, see ``CLASSES``) on a grey
background, with sizes, positions, repeated objects (plurals: "two red circles") and occlusion.
Every image gets several varied captions (templates, synonyms, word order, spatial relations,
partial mentions), so the word -> object alignment is learnable but not trivial.

Written as the real datasets are:

* ``dataset_synthetic.json`` - Karpathy split JSON (``images[].filename/filepath/split/imgid/
  cocoid/sentences[].tokens/raw/sentid/imgid/sentids``);
* ``annotations/captions_{train,val,test}.json`` - COCO captions;
* ``annotations/instances_{train,val,test}.json`` - COCO instances with category names and one
  segmentation per object: compressed RLE of the *visible* (post-occlusion) pixels, or, for a
  fraction of unoccluded polygonal objects, a polygon (as real COCO has both);
* ``images/<cocoid>.png`` - the images (drawn without anti-aliasing, so every object pixel has
  exactly the object's colour and the masks are exact);
* ``generator.json`` - the generator's parameters and a fingerprint of its source code, used to
  tell whether the files on disk are up to date (a changed generator regenerates them).

Everything derives from ``numpy.random.default_rng([seed, image_index])``, so the same parameters
give byte-identical annotation files (and images, for a given Pillow version), whatever the
number of worker processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from ica_captioning.data import text as _text_module
from ica_captioning.data.text import tokenize

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
KARPATHY_FILE = "dataset_synthetic.json"
MANIFEST_FILE = "generator.json"
IMAGES_SUBDIR = "images"
ANNOTATIONS_SUBDIR = "annotations"


def _source_fingerprint() -> str:
    """sha256 (16 hex digits) of the code that determines the generated files.

    ``GENERATOR_VERSION`` alone once stayed at 1 while the drawing and caption code changed,
    and a dataset generated before the change was silently kept; the fingerprint of this module
    and of the tokeniser makes any change regenerate (about 7 s).
    """
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(_text_module.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


GENERATOR_SOURCE = _source_fingerprint()


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
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
#: Probabilities of 1, 2, 3 and 4 objects per image.
OBJECT_COUNT_P = (0.2, 0.3, 0.3, 0.2)
#: Probability that a new object repeats the class and colour of an earlier one (plurals).
REPEAT_P = 0.35
#: An object must keep at least this fraction of its pixels visible after occlusion.
MIN_VISIBLE_FRACTION = 0.55
POLYGON_SHAPES = ("square", "triangle", "star", "heart", "cross", "diamond")


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


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------


def _regular_star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else 0.45 * r
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _heart(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    t = np.linspace(0.0, 2.0 * math.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    scale = r / 16.5
    # The curve spans y in [-17, 12]; centre it vertically and flip (image y grows downwards).
    return [(cx + scale * a, cy - scale * (b + 2.5)) for a, b in zip(x.tolist(), y.tolist())]


def _cross(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    t = 0.32 * r
    return [
        (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
        (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
        (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
    ]  # fmt: skip


def _shape_polygon(class_name: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
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


def _place_objects(
    rng: np.random.Generator, image_size: int
) -> tuple[list[SceneObject], np.ndarray] | None:
    """Sample 1-4 objects and a layout where each keeps enough visible pixels."""
    n = int(rng.choice(4, p=OBJECT_COUNT_P)) + 1
    specs: list[tuple[str, str]] = []
    for i in range(n):
        if i > 0 and rng.random() < REPEAT_P:
            specs.append(specs[int(rng.integers(i))])
        else:
            specs.append(
                (CLASS_NAMES[rng.integers(len(CLASSES))], COLOUR_NAMES[rng.integers(len(COLOURS))])
            )
    for _attempt in range(30):
        objects = []
        for class_name, colour in specs:
            size, lo, hi = SIZES[int(rng.integers(len(SIZES)))]
            radius = float(rng.uniform(lo, hi)) * image_size
            margin = radius + 1.0
            center = (
                float(rng.uniform(margin, image_size - margin)),
                float(rng.uniform(margin, image_size - margin)),
            )
            full, polygon = draw_shape_mask(class_name, center, radius, image_size)
            objects.append(
                SceneObject(class_name, colour, size, center, radius, full, full.copy(), polygon)
            )
        # Later objects are drawn on top: the visible part of object k is what no later one covers.
        covered = np.zeros((image_size, image_size), dtype=bool)
        # Same-colour objects must not touch-overlap: their outlines would merge into one blob.
        ok = not any(
            a.colour == b.colour and (a.full_mask & b.full_mask).any()
            for k, a in enumerate(objects)
            for b in objects[k + 1 :]
        )
        for obj in reversed(objects if ok else ()):
            obj.visible_mask = obj.full_mask & ~covered
            covered |= obj.full_mask
            if obj.visible_mask.sum() < MIN_VISIBLE_FRACTION * obj.full_mask.sum():
                ok = False
                break
        if ok:
            return objects, covered
    return None


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Phrases:
    """Noun phrases for the objects of one scene, with the scene's random choices."""

    def __init__(self, rng: np.random.Generator, objects: Sequence[SceneObject]):
        self.rng = rng
        self.objects = objects

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def noun(self, class_name: str, plural: bool) -> str:
        spec = CLASSES[CATEGORY_IDS[class_name] - 1]
        if plural:
            return spec.plural
        if spec.synonyms and self.rng.random() < 0.35:
            return self.pick(spec.synonyms)
        return spec.name

    def single(self, obj: SceneObject, *, colour: bool = True, size: bool | None = None) -> str:
        """'a small red circle' (size word only for small/large objects, randomly)."""
        words = []
        if size is None:
            size = self.rng.random() < 0.4
        if size and obj.size in SIZE_WORDS:
            words.append(self.pick(SIZE_WORDS[obj.size]))
        if colour:
            words.append(obj.colour)
        words.append(self.noun(obj.class_name, plural=False))
        text = " ".join(words)
        return f"{_article(text)} {text}"

    def groups(self, *, by_colour: bool = True) -> list[list[SceneObject]]:
        """Objects grouped by (class, colour) or by class, in first-appearance order."""
        groups: dict[tuple[str, str], list[SceneObject]] = {}
        for obj in self.objects:
            groups.setdefault((obj.class_name, obj.colour if by_colour else ""), []).append(obj)
        return list(groups.values())

    def group(self, members: Sequence[SceneObject], *, colour: bool = True) -> str:
        if len(members) == 1:
            return self.single(members[0], colour=colour)
        words = [NUMBER_WORDS[len(members)]]
        if colour:
            words.append(members[0].colour)
        words.append(self.noun(members[0].class_name, plural=True))
        return " ".join(words)

    def listing(self, groups: Sequence[Sequence[SceneObject]], *, colour: bool = True) -> str:
        parts = [self.group(g, colour=colour) for g in groups]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]


def _relation(a: SceneObject, b: SceneObject, image_size: int) -> str:
    """Spatial relation of ``a`` to ``b`` from their centres (image y grows downwards)."""
    dx = a.center[0] - b.center[0]
    dy = a.center[1] - b.center[1]
    if math.hypot(dx, dy) < 0.3 * image_size and abs(dx) > abs(dy):
        return "next to"
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def _position(obj: SceneObject, image_size: int) -> str:
    third = image_size / 3
    col = min(int(obj.center[0] // third), 2)
    row = min(int(obj.center[1] // third), 2)
    vertical = ("top", "middle", "bottom")[row]
    horizontal = ("left", "center", "right")[col]
    if row == 1 and col == 1:
        return "in the middle of the picture"
    if row == 1:
        return f"on the {horizontal} side"
    if col == 1:
        return f"at the {vertical}"
    return f"in the {vertical} {horizontal} corner"


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + "."


def make_captions(
    rng: np.random.Generator, objects: Sequence[SceneObject], image_size: int, count: int
) -> list[str]:
    """Write ``count`` distinct captions for a scene.

    The first caption always lists every object; the others are drawn from templates that vary
    word order and synonyms, add relations and positions, and often mention only some objects.
    """
    p = _Phrases(rng, objects)
    groups = p.groups()
    n = len(objects)
    bg = p.pick(("gray", "grey", "plain gray", "plain grey"))

    def full_listing() -> str:
        order = list(groups)
        if rng.random() < 0.5:
            order = order[::-1]
        return p.listing(order)

    templates = [
        lambda: full_listing(),
        lambda: (
            # The verb agrees with the first item, as in "there is a star and two rings".
            lambda text: (
                f"there {'are' if text.split()[0] in NUMBER_WORDS.values() else 'is'} "
                f"{text} on a {bg} background"
            )
        )(full_listing()),
        lambda: f"{p.pick(('a picture of', 'an image of', 'a drawing of'))} {full_listing()}",
        lambda: f"a {bg} background with {full_listing()}",
        lambda: (
            f"{'one shape' if n == 1 else NUMBER_WORDS[n] + ' shapes'}: {full_listing()}"
            if rng.random() < 0.5
            else f"{'a single shape' if n == 1 else NUMBER_WORDS[n] + ' shapes'} on {bg}"
        ),
        lambda: (lambda o: f"{p.single(o)} {_position(o, image_size)}")(p.pick(objects)),
        lambda: (
            p.listing(p.groups(by_colour=False), colour=False)
            + " "
            + p.pick(("on a background", "in a picture"))
        ),
    ]
    if n >= 2:

        def relation() -> str:
            i, j = rng.choice(n, size=2, replace=False)
            a, b = objects[int(i)], objects[int(j)]
            return f"{p.single(a)} {_relation(a, b, image_size)} {p.single(b)}"

        def partial() -> str:
            g = groups[int(rng.integers(len(groups)))]
            return f"{p.group(g)} {p.pick(('and some other shapes', 'among other shapes'))}"

        templates += [relation, relation, partial]
        occluded = [
            (a, b)
            for k, a in enumerate(objects)
            for b in objects[k + 1 :]
            if (a.full_mask & b.full_mask).any()
        ]
        if occluded:
            a, b = occluded[int(rng.integers(len(occluded)))]
            templates.append(lambda: f"{p.single(a)} partly hidden behind {p.single(b)}")
            templates.append(lambda: f"{p.single(b)} in front of {p.single(a)}")
    else:
        obj = objects[0]
        templates += [
            lambda: f"{p.single(obj, size=True)} on its own",
            lambda: f"a lonely {obj.colour} {p.noun(obj.class_name, False)}",
        ]

    captions = [_sentence(templates[0]())]
    order = rng.permutation(len(templates) - 1) + 1
    attempts = 0
    while len(captions) < count and attempts < 20 * count:
        template = templates[int(order[attempts % len(order)])]
        attempts += 1
        caption = _sentence(template())
        if caption not in captions:
            captions.append(caption)
    while len(captions) < count:  # tiny scenes with few distinct phrasings: allow repeats
        captions.append(_sentence(templates[int(rng.integers(len(templates)))]()))
    return captions


def render_scene(index: int, image_size: int = 128, seed: int = 0, captions: int = 5) -> Scene:
    """Render image ``index`` of the dataset with ``seed``; pure and deterministic.

    Args:
        index: image index (0-based).
        image_size: side of the square image in pixels.
        seed: dataset seed.
        captions: number of captions to write.

    Returns:
        The scene: pixels ``[S, S, 3]`` uint8, objects with full/visible masks, captions.
    """
    rng = np.random.default_rng([seed, index])
    while True:
        placed = _place_objects(rng, image_size)
        if placed is not None:
            break
    objects, _covered = placed
    background = int(rng.integers(100, 156))
    pixels = np.full((image_size, image_size, 3), background, dtype=np.uint8)
    for obj in objects:
        pixels[obj.full_mask] = COLOURS[obj.colour]
    return Scene(
        index, pixels, background, objects, make_captions(rng, objects, image_size, captions)
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _split_counts(num_images: int, fractions: dict[str, float]) -> dict[str, int]:
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


def _image_record(args: tuple[int, int, int, int, str, float, str]) -> dict[str, Any]:
    """Worker: render one image, write it, return its annotation data (picklable)."""
    index, image_size, seed, n_captions, image_format, polygon_fraction, images_dir = args
    scene = render_scene(index, image_size, seed, n_captions)
    cocoid = index + 1
    file_name = f"{cocoid:06d}.{image_format}"
    image = Image.fromarray(scene.pixels, mode="RGB")
    if image_format == "png":
        image.save(os.path.join(images_dir, file_name), format="PNG", optimize=False)
    else:
        image.save(os.path.join(images_dir, file_name), format="JPEG", quality=95)
    # Polygons only where they describe the visible pixels (unoccluded polygonal objects); the
    # choice uses its own stream so it never changes the scene.
    choose = np.random.default_rng([seed, index, 1])
    instances = []
    for obj in scene.objects:
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
                "attributes": {"colour": obj.colour, "size": obj.size},
            }
        )
    return {
        "cocoid": cocoid,
        "file_name": file_name,
        "captions": scene.captions,
        "instances": instances,
    }


def _dump_json(data: Any, path: Path) -> None:
    # Fixed separators, key order and ASCII-escaping: byte-identical output for the same data.
    path.write_text(json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n")


def generator_config(
    num_images: int = 2000,
    image_size: int = 128,
    seed: int = 0,
    split_fractions: dict[str, float] | None = None,
    captions_per_image: int = 5,
    image_format: str = "png",
    polygon_fraction: float = 0.2,
) -> dict[str, Any]:
    """The parameters that determine the generated files (stored in ``generator.json``)."""
    fractions = split_fractions or {"train": 0.8, "val": 0.1, "test": 0.1}
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    return {
        "generator_version": GENERATOR_VERSION,
        "generator_source": GENERATOR_SOURCE,
        "num_images": int(num_images),
        "image_size": int(image_size),
        "seed": int(seed),
        "split_counts": _split_counts(int(num_images), fractions),
        "captions_per_image": int(captions_per_image),
        "image_format": image_format,
        "polygon_fraction": float(polygon_fraction),
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


def generate_dataset(
    out_dir: str | os.PathLike,
    num_images: int = 2000,
    image_size: int = 128,
    seed: int = 0,
    split_fractions: dict[str, float] | None = None,
    captions_per_image: int = 5,
    image_format: str = "png",
    polygon_fraction: float = 0.2,
    num_workers: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate the embedded dataset into ``out_dir`` (overwriting what is there).

    Args:
        out_dir: output folder (the ``dataset.images_dir`` of the generated set).
        num_images: number of images.
        image_size: side of the square images in pixels.
        seed: seed; the same parameters give byte-identical annotation files.
        split_fractions: ``{train, val, test}`` fractions (default 0.8/0.1/0.1); images are
            assigned in index order (train first).
        captions_per_image: captions per image (>= 5 in the default set).
        image_format: ``png`` (default, lossless: masks match pixels exactly) or ``jpg``.
        polygon_fraction: chance that an unoccluded polygonal object is stored as a polygon
            instead of RLE (both kinds appear in real COCO files).
        num_workers: worker processes (1 = in this process); the output does not depend on it.
        progress: show a tqdm progress bar.

    Returns:
        A summary: ``config``, the written ``files`` (as strings) and per-split image counts.
    """
    config = generator_config(
        num_images,
        image_size,
        seed,
        split_fractions,
        captions_per_image,
        image_format,
        polygon_fraction,
    )
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
    jobs = [
        (
            i,
            config["image_size"],
            config["seed"],
            config["captions_per_image"],
            image_format,
            config["polygon_fraction"],
            str(files["images_dir"]),
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

    split_of = []
    for split in SPLITS:
        split_of += [split] * config["split_counts"][split]

    categories = [
        {"id": CATEGORY_IDS[c.name], "name": c.name, "supercategory": "shape"} for c in CLASSES
    ]
    info = {
        "description": "ICA captioning embedded synthetic dataset",
        "version": str(GENERATOR_VERSION),
        "year": 2024,
        "contributor": "ica_captioning.data.synthetic",
        "url": "",
        "date_created": "",
    }
    licenses = [{"id": 1, "name": "generated", "url": ""}]
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

    _dump_json({"images": karpathy_images, "dataset": "synthetic"}, files["karpathy"])
    for split in SPLITS:
        base = {"info": info, "licenses": licenses, "images": coco[split]["images"]}
        _dump_json({**base, "annotations": coco[split]["captions"]}, files["captions"][split])
        _dump_json(
            {**base, "annotations": coco[split]["instances"], "categories": categories},
            files["instances"][split],
        )
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
        sentid - 1,
        ann_id - 1,
        out_dir,
    )
    return summary


def _collect(iterator, total: int, progress: bool) -> list[dict[str, Any]]:
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=total, desc="generating synthetic images", unit="img")
    return list(iterator)
