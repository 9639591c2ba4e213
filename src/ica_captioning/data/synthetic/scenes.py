"""Scene sampling: which objects an image shows, where they lie, and the rendered pixels.

Three random streams per image keep the settings independent (``SceneSettings``):
``[seed, index]`` places the mentioned objects and writes the captions, ``[seed, index, 2]``
draws the background texture and noise, ``[seed, index, 3]`` places the distractors. (Stream
``[seed, index, 1]`` is the writer's polygon-or-RLE choice.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ica_captioning.data.synthetic.captions import make_captions
from ica_captioning.data.synthetic.shapes import draw_shape_mask
from ica_captioning.data.synthetic.world import (
    CLASS_NAMES,
    CLASSES,
    COLOUR_NAMES,
    COLOURS,
    Scene,
    SceneObject,
    SceneSettings,
)

#: Layout attempts before the mentioned objects are sampled afresh.
LAYOUT_ATTEMPTS = 30
#: Position attempts per distractor before it is left out (a crowded image has no room).
DISTRACTOR_ATTEMPTS = 30
#: Background grey levels stay in this range, away from white and black objects.
BACKGROUND_RANGE = (60, 200)


def _draw(
    class_name: str, colour: str, size: str, radius: float, rng: np.random.Generator, side: int
) -> SceneObject:
    """An object of ``radius`` pixels at a uniformly random position fully inside the image."""
    margin = radius + 1.0
    center = (
        float(rng.uniform(margin, side - margin)),
        float(rng.uniform(margin, side - margin)),
    )
    full, polygon = draw_shape_mask(class_name, center, radius, side)
    return SceneObject(class_name, colour, size, center, radius, full, full.copy(), polygon)


def _place_objects(
    rng: np.random.Generator, image_size: int, scene: SceneSettings
) -> list[SceneObject] | None:
    """Sample the mentioned objects and a layout where each keeps enough visible pixels.

    Returns:
        The objects in drawing order (visible masks set), or ``None`` when
        ``LAYOUT_ATTEMPTS`` layouts failed (the caller retries; ``rng`` has moved on).
    """
    n = int(rng.choice(scene.mentioned_max, p=scene.object_count_p)) + 1
    specs: list[tuple[str, str]] = []
    for i in range(n):
        if i > 0 and rng.random() < scene.repeat_p:
            specs.append(specs[int(rng.integers(i))])
        else:
            specs.append(
                (CLASS_NAMES[rng.integers(len(CLASSES))], COLOUR_NAMES[rng.integers(len(COLOURS))])
            )
    for _attempt in range(LAYOUT_ATTEMPTS):
        objects = []
        for class_name, colour in specs:
            size, lo, hi = scene.sizes[int(rng.integers(len(scene.sizes)))]
            radius = float(rng.uniform(lo, hi)) * image_size
            objects.append(_draw(class_name, colour, size, radius, rng, image_size))
        # Same-colour objects must not overlap: their outlines would merge into one blob.
        ok = not any(
            a.colour == b.colour and (a.full_mask & b.full_mask).any()
            for k, a in enumerate(objects)
            for b in objects[k + 1 :]
        )
        # Later objects are drawn on top: the visible part of object k is what no later one covers.
        covered = np.zeros((image_size, image_size), dtype=bool)
        for obj in reversed(objects if ok else ()):
            obj.visible_mask = obj.full_mask & ~covered
            covered |= obj.full_mask
            if obj.visible_mask.sum() < scene.min_visible_fraction * obj.full_mask.sum():
                ok = False
                break
        if ok:
            return objects
    return None


def _place_distractors(
    rng: np.random.Generator, image_size: int, scene: SceneSettings, objects: list[SceneObject]
) -> list[SceneObject]:
    """Small unmentioned objects behind the mentioned ones (their own stream: ``rng``).

    The mentioned objects are drawn over them, so the objects, their masks and the captions do
    not depend on the distractors. A distractor that finds no place in ``DISTRACTOR_ATTEMPTS``
    positions (too little of it visible, or overlapping a same-colour object or another
    distractor) is left out.
    """
    count = int(rng.choice(len(scene.distractor_count_p), p=scene.distractor_count_p))
    lo, hi = scene.distractor_size
    same_shape = rng.random() < scene.distractor_same_shape_p
    over = np.zeros((image_size, image_size), dtype=bool)
    for obj in objects:
        over |= obj.full_mask
    placed: list[SceneObject] = []
    for k in range(count):
        if k == 0 and same_shape:
            # The same class as a mentioned object in another colour: naming the colour right
            # needs the model to look at the mentioned one, not at its look-alike.
            target = objects[int(rng.integers(len(objects)))]
            taken = {o.colour for o in objects if o.class_name == target.class_name}
            colours = [c for c in COLOUR_NAMES if c not in taken]
            class_name, colour = target.class_name, colours[int(rng.integers(len(colours)))]
        else:
            class_name = CLASS_NAMES[rng.integers(len(CLASSES))]
            colour = COLOUR_NAMES[rng.integers(len(COLOURS))]
        radius = float(rng.uniform(lo, hi)) * image_size
        for _attempt in range(DISTRACTOR_ATTEMPTS):
            obj = _draw(class_name, colour, "distractor", radius, rng, image_size)
            obj.mentioned = False
            # Distractors do not overlap each other, so only mentioned objects hide them.
            clash = any(
                (other.full_mask & obj.full_mask).any()
                for other in [*objects, *placed]
                if other.colour == colour or not other.mentioned
            )
            obj.visible_mask = obj.full_mask & ~over
            visible = obj.visible_mask.sum()
            if not clash and visible >= scene.distractor_min_visible_fraction * obj.full_mask.sum():
                placed.append(obj)
                break
    return placed


def _background(
    rng: np.random.Generator, base: int, image_size: int, scene: SceneSettings
) -> np.ndarray:
    """``[S, S]`` uint8 grey levels: ``base`` plus a smooth random texture plus pixel noise."""
    field = np.full((image_size, image_size), float(base))
    if scene.texture_strength > 0:
        cells = rng.standard_normal((scene.texture_cells, scene.texture_cells)).astype(np.float32)
        smooth = np.asarray(
            Image.fromarray(cells, mode="F").resize((image_size, image_size), Image.BICUBIC)
        )
        field += scene.texture_strength * smooth / max(float(smooth.std()), 1e-6)
    if scene.noise_std > 0:
        field += rng.normal(0.0, scene.noise_std, (image_size, image_size))
    return np.clip(np.rint(field), *BACKGROUND_RANGE).astype(np.uint8)


def render_scene(
    index: int, image_size: int, seed: int, captions: int, scene: SceneSettings
) -> Scene:
    """Render image ``index`` of the dataset with ``seed``; pure and deterministic.

    Args:
        index: image index (0-based).
        image_size: side of the square image in pixels.
        seed: dataset seed.
        captions: number of captions to write.
        scene: what a scene may contain (``ingestion.synthetic.scene``).

    Returns:
        The scene: pixels ``[S, S, 3]`` uint8, mentioned objects and distractors with full and
        visible masks, captions.
    """
    rng = np.random.default_rng([seed, index])
    while (objects := _place_objects(rng, image_size, scene)) is None:
        pass
    base = int(rng.integers(100, 156))
    distractors = _place_distractors(
        np.random.default_rng([seed, index, 3]), image_size, scene, objects
    )
    grey = _background(np.random.default_rng([seed, index, 2]), base, image_size, scene)
    pixels = np.repeat(grey[:, :, None], 3, axis=2)
    for obj in [*distractors, *objects]:
        pixels[obj.full_mask] = COLOURS[obj.colour]
    text = make_captions(rng, objects, image_size, captions, distractors=bool(distractors))
    return Scene(index, pixels, base, objects, text, distractors)
