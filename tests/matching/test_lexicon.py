from __future__ import annotations

import numpy as np
import pytest
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

from ica_captioning.matching import Lexicon, match_classes
from ica_captioning.matching.lexicon import regular_plural

COCO80 = [
    c
    for c in MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]
    if c not in ("N/A", "__background__")
]


def m(text, classes):
    return match_classes(text.split(), set(classes))


@pytest.mark.parametrize(
    ("text", "classes", "expected"),
    [
        # synonyms and hyponyms
        ("a man riding a bike", {"person", "bicycle"}, [(1, "person"), (4, "bicycle")]),
        ("a bike parked outside", {"motorcycle"}, [(1, "motorcycle")]),  # second candidate
        ("a jet on the runway", {"airplane"}, [(1, "airplane")]),
        ("a plane and a television", {"airplane", "tv"}, [(1, "airplane"), (4, "tv")]),
        ("a cat on the sofa", {"cat", "couch"}, [(1, "cat"), (4, "couch")]),
        ("a doughnut and a cellphone", {"donut", "cell phone"}, [(1, "donut"), (4, "cell phone")]),
        ("girl with a puppy", {"person", "dog"}, [(0, "person"), (3, "dog")]),
        ("a tennis player", {"person"}, [(2, "person")]),  # phrase, head noun
        # plurals, regular and irregular
        ("two dogs and three buses", {"dog", "bus"}, [(1, "dog"), (4, "bus")]),
        ("people men women children", {"person"}, [(i, "person") for i in range(4)]),
        ("mice and knives", {"mouse", "knife"}, [(0, "mouse"), (2, "knife")]),
        ("sheep and geese", {"sheep", "bird"}, [(0, "sheep"), (2, "bird")]),
        ("babies with skis", {"person", "skis"}, [(0, "person"), (2, "skis")]),
        # multi-word names label the head noun
        ("a man eating a hot dog", {"person", "hot dog", "dog"}, [(1, "person"), (5, "hot dog")]),
        ("two teddy bears", {"teddy bear", "bear"}, [(2, "teddy bear")]),
        (
            "a cell phone on a dining table",
            {"cell phone", "dining table"},
            [(2, "cell phone"), (6, "dining table")],
        ),
        ("holding a tennis racket", {"tennis racket"}, [(3, "tennis racket")]),
        ("a hotdog", {"hot dog"}, [(1, "hot dog")]),
        (
            "a laptop computer and a computer keyboard",
            {"laptop", "keyboard"},
            [(2, "laptop"), (6, "keyboard")],
        ),  # one mention each, at the head noun
        (
            "fire hydrants and stop signs",
            {"fire hydrant", "stop sign"},
            [(1, "fire hydrant"), (4, "stop sign")],
        ),
        # no false matches
        ("a hot day", {"hot dog", "dog"}, []),
        ("a hot dog stand", {"dog"}, []),  # the food is named, not the animal
        ("a teddy bear", {"bear"}, []),
        ("an orange cat", {"cat"}, [(2, "cat")]),
        ("an orange cat", {"cat", "orange"}, [(1, "orange"), (2, "cat")]),
        ("a man wearing glasses", {"person", "cup", "wine glass"}, [(1, "person")]),
        ("on the tennis court", {"tennis racket"}, []),
        ("down the ski slope", {"skis"}, []),
        ("a dog and another dog", {"dog"}, [(1, "dog"), (4, "dog")]),  # one entry per mention
        ("", {"dog"}, []),
    ],
)
def test_lexicon_cases(text, classes, expected):
    assert m(text, classes) == expected


def test_embedded_dataset_words():
    # docs/contracts.md: class, plural, synonyms used in captions
    table = {
        "circle": ["circle", "circles", "disc", "disk"],
        "square": ["square", "squares", "block"],
        "triangle": ["triangle", "triangles"],
        "star": ["star", "stars"],
        "heart": ["heart", "hearts"],
        "cross": ["cross", "crosses", "plus"],
        "diamond": ["diamond", "diamonds", "rhombus"],
        "ring": ["ring", "rings", "hoop"],
        "crescent moon": ["moon", "crescent", "moons", "crescents"],
    }
    every = set(table)
    for cname, words in table.items():
        for word in words:
            assert m(f"a red {word} here", every) == [(2, cname)], word
    assert m("two crescent moons", every) == [(2, "crescent moon")]
    for colour in "red green blue yellow orange purple white black".split():
        assert m(f"a {colour}", every) == []


def test_all_80_coco_classes_and_their_plurals_match_themselves():
    assert len(COCO80) == 80
    for cname in COCO80:
        words = cname.split()
        head = len(words) - 1
        assert match_classes(words, {cname}) == [(head, cname)], cname
        plural = words[:-1] + [regular_plural(words[-1])]
        if cname not in ("skis", "scissors", "broccoli", "sheep", "mouse", "knife"):
            assert match_classes(plural, {cname}) == [(head, cname)], plural


def test_extensible_by_configuration():
    lex = Lexicon.from_package({"person": ["astronaut"], "robot": ["android", "droid"]})
    assert lex.match("two astronauts and a droid".split(), {"person", "robot"}) == [
        (1, "person"),
        (4, "robot"),
    ]
    assert match_classes(["astronaut"], {"person"}) == []  # the default lexicon is unchanged
    # A class only the detector knows still matches its own name.
    assert Lexicon({}).match(["a", "unicorn"], {"unicorn"}) == [(1, "unicorn")]


def test_tokens_may_be_numpy_arrays():
    tokens = np.array(["a", "teddy", "bear"], dtype=object)
    assert match_classes(list(tokens), {"teddy bear"}) == [(2, "teddy bear")]


def test_regular_plural_rules():
    assert [regular_plural(w) for w in ["dog", "bus", "box", "bench", "baby", "toy"]] == [
        "dogs",
        "buses",
        "boxes",
        "benches",
        "babies",
        "toys",
    ]
