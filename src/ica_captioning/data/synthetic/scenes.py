"""Scene sampling: which objects an image shows, where they lie, and the rendered pixels."""

from __future__ import annotations

import numpy as np

from ica_captioning.data.synthetic.captions import make_captions
from ica_captioning.data.synthetic.shapes import draw_shape_mask
from ica_captioning.data.synthetic.world import (
    CLASS_NAMES,
    CLASSES,
    COLOUR_NAMES,
    COLOURS,
    SIZES,
    Scene,
    SceneObject,
)

#: Probabilities of 1, 2, 3 and 4 objects per image.
OBJECT_COUNT_P = (0.2, 0.3, 0.3, 0.2)
#: Probability that a new object repeats the class and colour of an earlier one (plurals).
REPEAT_P = 0.35
#: An object must keep at least this fraction of its pixels visible after occlusion.
MIN_VISIBLE_FRACTION = 0.55


def _place_objects(
    rng: np.random.Generator, image_size: int
) -> tuple[list[SceneObject], np.ndarray] | None:
    """Sample 1-4 objects and a layout where each keeps enough visible pixels.

    Returns:
        The objects in drawing order and the ``[S, S]`` bool union of their masks, or ``None``
        when 30 layouts failed (the caller retries; ``rng`` has moved on).
    """
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


def render_scene(index: int, image_size: int, seed: int, captions: int) -> Scene:
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
