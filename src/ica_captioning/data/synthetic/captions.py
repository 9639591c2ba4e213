"""Caption wording: several distinct, varied captions that describe a scene truthfully.

Templates vary word order and synonyms, add spatial relations, positions and occlusion, and often
mention only some of the objects, so the word -> object alignment is learnable but not trivial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ica_captioning.data.synthetic.world import CATEGORY_IDS, CLASSES, SceneObject

#: Words for the size classes; medium objects get none. "tiny" is kept for the distractors.
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}


def _article(word: str) -> str:
    """'a' or 'an' before ``word``."""
    return "an" if word[0] in "aeiou" else "a"


class _Phrases:
    """Noun phrases for the objects of one scene, with the scene's random choices."""

    def __init__(self, rng: np.random.Generator, objects: Sequence[SceneObject]):
        self.rng = rng
        self.objects = objects

    def pick(self, options: Sequence[str]) -> str:
        """One of ``options``, uniformly."""
        return options[int(self.rng.integers(len(options)))]

    def noun(self, class_name: str, plural: bool) -> str:
        """The class noun: its plural, or in the singular sometimes a synonym."""
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
        """'two red circles', or the single phrase for a group of one."""
        if len(members) == 1:
            return self.single(members[0], colour=colour)
        words = [NUMBER_WORDS[len(members)]]
        if colour:
            words.append(members[0].colour)
        words.append(self.noun(members[0].class_name, plural=True))
        return " ".join(words)

    def listing(self, groups: Sequence[Sequence[SceneObject]], *, colour: bool = True) -> str:
        """'a star, two rings and a blue heart'."""
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
    """Where ``obj`` lies in a 3x3 grid over the image ('in the top left corner')."""
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
    """Single spaces, a capital first letter and a full stop."""
    text = " ".join(text.split())
    return text[0].upper() + text[1:] + "."


def make_captions(
    rng: np.random.Generator,
    objects: Sequence[SceneObject],
    image_size: int,
    count: int,
    *,
    distractors: bool,
) -> list[str]:
    """Write ``count`` distinct captions for a scene.

    The first caption always lists every mentioned object; the others are drawn from templates
    that vary word order and synonyms, add relations and positions, and often mention only some
    objects. Distractors are never named; with ``distractors`` the phrases that count or isolate
    the shapes say that tiny ones are there too (the same random draws either way).
    """
    p = _Phrases(rng, objects)
    groups = p.groups()
    n = len(objects)
    bg = p.pick(("gray", "grey", "plain gray", "plain grey"))

    # Counting phrases stay true when unmentioned tiny distractors are in the picture.
    others = " and some tiny ones" if distractors else ""

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
            f"{'one shape' if n == 1 else NUMBER_WORDS[n] + ' shapes'}{others}: {full_listing()}"
            if rng.random() < 0.5
            else f"{'a single shape' if n == 1 else NUMBER_WORDS[n] + ' shapes'}{others} on {bg}"
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
        if distractors:
            templates += [
                lambda: f"{p.single(obj, size=True)} among tiny shapes",
                lambda: f"a {obj.colour} {p.noun(obj.class_name, False)} with tiny shapes around",
            ]
        else:
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
