"""Each scene setting of the generator changes what it should and nothing else."""

from __future__ import annotations

import re

import numpy as np
import pytest
from project_conf import section

from ica_captioning.data.synthetic import COLOURS, SceneSettings, render_scene
from ica_captioning.params import ParameterError
from ica_captioning.params.ingestion import SceneParams

CONF = section("ingestion")["synthetic"]["scene"]
SIZE = 128
N = 40


def settings(**changes) -> SceneSettings:
    """conf/base's scene settings with nested ``changes`` (``background={...}`` merges)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in CONF.items()}
    for key, value in changes.items():
        if isinstance(value, dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return SceneSettings.from_params(raw)


def scenes(scene: SceneSettings, n: int = N, seed: int = 0):
    return [render_scene(i, SIZE, seed, 5, scene) for i in range(n)]


def _same_objects(a, b) -> None:
    assert len(a.objects) == len(b.objects)
    for x, y in zip(a.objects, b.objects):
        assert (x.class_name, x.colour, x.size, x.center, x.radius) == (
            y.class_name,
            y.colour,
            y.size,
            y.center,
            y.radius,
        )
        assert np.array_equal(x.visible_mask, y.visible_mask)


def _objects_mask(scene) -> np.ndarray:
    union = np.zeros((SIZE, SIZE), dtype=bool)
    for obj in [*scene.objects, *scene.distractors]:
        union |= obj.full_mask
    return union


def test_background_changes_only_background_pixels():
    flat = settings(background={"texture_strength": 0.0, "noise_std": 0.0})
    textured = settings(background={"texture_strength": 18.0, "noise_std": 0.0})
    noisy = settings(background={"texture_strength": 0.0, "noise_std": 8.0})
    for a, b, c in zip(scenes(flat), scenes(textured), scenes(noisy)):
        for other in (b, c):
            _same_objects(a, other)
            assert a.captions == other.captions
            assert [d.center for d in a.distractors] == [d.center for d in other.distractors]
            on = _objects_mask(a)
            assert np.array_equal(a.pixels[on], other.pixels[on])  # objects untouched
        off = ~_objects_mask(a)
        assert np.all(a.pixels[off] == a.background)  # flat grey
        smooth, grain = b.pixels[off][:, 0].astype(float), c.pixels[off][:, 0].astype(float)
        assert smooth.std() > 8 and grain.std() > 4
        # Texture is low-frequency (neighbours alike), noise is not.
        row_b, row_c = b.pixels[:, :, 0].astype(float), c.pixels[:, :, 0].astype(float)
        assert np.abs(np.diff(row_b, axis=1)).mean() < np.abs(np.diff(row_c, axis=1)).mean()


def _normalise(caption: str) -> str:
    """Undo the phrases that say tiny distractors are there too."""
    caption = caption.replace(" and some tiny ones", "")
    caption = caption.replace(" among tiny shapes", " on its own")
    return re.sub(r"^A (\w+) (.+) with tiny shapes around", r"A lonely \1 \2", caption)


def test_distractors_are_unmentioned_small_and_change_nothing_else():
    none = settings(distractors={"count_p": [1.0, 0.0, 0.0, 0.0]})
    many = settings(distractors={"count_p": [0.0, 0.0, 0.0, 1.0]})
    smallest = min(lo for _, lo, _ in many.sizes) * SIZE
    with_any = 0
    for a, b in zip(scenes(none), scenes(many)):
        assert a.distractors == []
        _same_objects(a, b)
        assert [_normalise(c) for c in b.captions] == a.captions
        with_any += bool(b.distractors)
        mentioned = {o.class_name for o in b.objects}
        for d in b.distractors:
            assert not d.mentioned and d.radius <= many.distractor_size[1] * SIZE < smallest
            assert d.visible_mask.sum() >= many.distractor_min_visible_fraction * d.full_mask.sum()
            # Drawn, behind the mentioned objects: its visible pixels have its colour.
            colour = np.all(b.pixels == np.array(COLOURS[d.colour], np.uint8), axis=-1)
            assert np.all(colour[d.visible_mask])
            if d.class_name not in mentioned:
                words = " ".join(b.captions).lower()
                assert d.class_name.split()[-1] not in words
    assert with_any >= N - 2  # only a crowded image may find no room


def test_same_shape_distractors_copy_a_mentioned_shape_in_another_colour():
    always = settings(distractors={"count_p": [0.0, 1.0, 0.0, 0.0], "same_shape_p": 1.0})
    never = settings(distractors={"count_p": [0.0, 1.0, 0.0, 0.0], "same_shape_p": 0.0})

    def look_alikes(scene: SceneSettings) -> int:
        hits = 0
        for s in scenes(scene):
            for d in s.distractors:
                same = [o for o in s.objects if o.class_name == d.class_name]
                hits += bool(same) and all(o.colour != d.colour for o in same)
        return hits

    placed = sum(bool(s.distractors) for s in scenes(always))
    assert look_alikes(always) == placed
    assert look_alikes(never) < placed / 3  # by chance only (1 class in 9)


def test_occlusion_setting_bounds_the_hidden_share():
    loose, strict = settings(min_visible_fraction=0.3), settings(min_visible_fraction=0.9)

    def hidden(scene: SceneSettings) -> list[float]:
        out = []
        for s in scenes(scene, n=80):
            for o in s.objects:
                out.append(1 - o.visible_mask.sum() / o.full_mask.sum())
        return out

    h_loose, h_strict = hidden(loose), hidden(strict)
    assert max(h_strict) <= 0.1 + 1e-9 and max(h_loose) <= 0.7 + 1e-9
    assert max(h_loose) > 0.1  # the looser bound is used


def test_sizes_and_repeats():
    wide = settings(sizes={"small": [0.05, 0.06], "medium": [0.1, 0.11], "large": [0.25, 0.26]})
    for s in scenes(wide):
        for o in s.objects:
            lo, hi = {n: (a, b) for n, a, b in wide.sizes}[o.size]
            assert lo * SIZE <= o.radius <= hi * SIZE
    repeat = settings(repeat_p=1.0)
    for s in scenes(repeat):
        assert len({(o.class_name, o.colour) for o in s.objects}) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"object_count_p": [0.5, 0.2]}, "object_count_p"),
        ({"sizes": {"small": [0.2, 0.1]}}, "sizes.small"),
        ({"distractors": {"count_p": [0.5, 0.6]}}, "distractors.count_p"),
        ({"background": {"texture_cells": 1}}, "texture_cells"),
    ],
)
def test_bad_scene_settings_are_rejected_with_their_key(changes, message):
    with pytest.raises((ValueError, ParameterError), match=message):
        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in CONF.items()}
        for key, value in changes.items():
            raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
        SceneParams.parse(raw, "ingestion.synthetic.scene")
        SceneSettings.from_params(raw)
