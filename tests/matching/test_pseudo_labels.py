from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from project_conf import section

from ica_captioning.detection import ImageDetections, detections_frame, encode_masks, image_records
from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.matching import Lexicon, match_classes, unpack_grid
from ica_captioning.matching.pseudo_labels import (
    MatchingInputError,
    NoPseudoLabelsError,
    build_pseudo_labels,
    check_pseudo_labels,
)
from ica_captioning.params import MatchingParams
from ica_captioning.pipelines.matching.nodes import match_captions


def build(captions, detections, lexicon, **overrides):
    """``build_pseudo_labels`` with conf/base's matching settings, single ones overridden."""
    conf = MatchingParams.parse(section("matching"), "matching")
    settings = {
        "score_threshold": conf.score_threshold,
        "grid_size": conf.grid_size,
        "cell_threshold": conf.cell_threshold,
        "progress": False,
    }
    return build_pseudo_labels(captions, detections, lexicon, **(settings | overrides))


def toy_detections(toy):
    results, _ = AnnotationsBackend(toy.instances, toy.images, include_crowd=True).detect(
        image_records(toy.images, toy.root)
    )
    return detections_frame(results)


def stat(stats, name, key=""):
    row = stats[(stats["statistic"] == name) & (stats["key"] == key)]
    assert len(row) == 1, (name, key)
    return row["value"].iat[0]


def test_union_and_grids_against_hand_computed_values(toy):
    pseudo, stats = build(toy.captions, toy_detections(toy), Lexicon.from_package(), grid_size=4)
    assert list(pseudo.columns[:6]) == [
        "caption_id",
        "image_id",
        "token_position",
        "class_name",
        "grid_size",
        "grid",
    ]
    rows = {(r.caption_id, r.token_position): r for r in pseudo.itertuples()}
    assert set(rows) == {(11, 1), (11, 4), (13, 2)}
    # "two dogs and a man", image 1 (32×48, cells 8×12): the two dog instances (top-left and
    # bottom-right quarters) are merged into one label.
    dog = unpack_grid(rows[(11, 1)].grid, 4)
    np.testing.assert_array_equal(dog, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
    # The person polygon (rows 4..12, cols 30..46) covers 0.25 / 0.417 of four cells: none
    # reaches 0.5, so its best cell (0, 3) is kept.
    person = unpack_grid(rows[(11, 4)].grid, 4)
    assert rows[(11, 4)].class_name == "person"
    assert np.argwhere(person).tolist() == [[0, 3]]
    # "a teddy bear on a bed", image 2 (40×40, cells 10×10), crowd mask rows 10..30, cols 5..35:
    # the edge columns are covered exactly half (0.5 >= threshold).
    bear = unpack_grid(rows[(13, 2)].grid, 4)
    assert rows[(13, 2)].class_name == "teddy bear"
    np.testing.assert_array_equal(bear, [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert (pseudo["grid_size"] == 4).all() and (pseudo["split"] == "train").all()
    assert isinstance(pseudo["grid"].iat[0], bytes) and len(pseudo["grid"].iat[0]) == 2

    assert stat(stats, "captions") == 4
    assert stat(stats, "captions_with_match") == 2
    assert stat(stats, "share_captions_with_match") == 0.5
    assert stat(stats, "mean_critical_objects_per_caption") == pytest.approx(3 / 4)
    assert stat(stats, "mean_critical_objects_per_matched_caption") == pytest.approx(3 / 2)
    # "a dog in the snow": image 3 has no detections -> counted, not labelled.
    assert stat(stats, "unmatched_mentions") == 1
    assert stat(stats, "class_unmatched_mentions", "dog") == 1
    assert stat(stats, "class_matches", "dog") == 1
    assert stat(stats, "class_matches", "person") == 1
    assert stat(stats, "grids_best_cell_fallback") == 1
    assert stat(stats, "grids") == 3
    assert stat(stats, "captions_image_not_in_detections") == 0


def test_agrees_with_per_caption_match_classes_and_shares_grids(toy):
    caps = [
        (20 + k, 1, text)
        for k, text in enumerate(
            ["a dog", "dogs near people", "a puppy next to a woman", "the men", "a dog and a dog"]
        )
    ]
    toy2 = toy.__class__(toy.root, toy.images, toy.captions, toy.instances, toy.masks, toy.data)
    toy2.captions = pd.DataFrame(
        {
            "caption_id": [c[0] for c in caps],
            "image_id": 1,
            "tokens": [np.array(c[2].split(), dtype=object) for c in caps],  # as Parquet gives
        }
    )
    pseudo, stats = build(toy2.captions, toy_detections(toy), Lexicon.from_package())
    got = {
        cid: list(zip(g["token_position"], g["class_name"]))
        for cid, g in pseudo.groupby("caption_id")
    }
    for cid, _, text in caps:
        assert got.get(cid, []) == match_classes(text.split(), {"dog", "person"})
    assert stat(stats, "grids") == 2  # one per (image, class), shared by all captions
    assert "split" not in pseudo.columns


def dets(rows):
    """detections table from (image_id, class, score, mask) tuples on 4×4 images."""
    results = {}
    for iid, cname, score, mask in rows:
        r = results.setdefault(iid, ImageDetections(iid, 4, 4))
        if cname is None:
            continue
        results[iid] = ImageDetections(
            iid,
            4,
            4,
            r.class_names + [cname],
            np.r_[r.scores, score],
            np.zeros((len(r.class_names) + 1, 4)),
            r.rle_counts + encode_masks(mask),
        )
    return detections_frame(list(results.values()))


def caps(*rows):
    return pd.DataFrame(
        {
            "caption_id": range(len(rows)),
            "image_id": [r[0] for r in rows],
            "tokens": [r[1].split() for r in rows],
        }
    )


LEFT = np.zeros((4, 4), np.uint8)
LEFT[:, :2] = 1
TOP = np.zeros((4, 4), np.uint8)
TOP[:2, :] = 1


def test_score_threshold_and_union_of_instances():
    table = dets([(1, "cat", 0.9, LEFT), (1, "cat", 0.6, TOP), (1, "dog", 0.3, TOP)])
    pseudo, stats = build(
        caps((1, "a cat and a dog")),
        table,
        Lexicon.from_package(),
        score_threshold=0.5,
        grid_size=2,
    )
    assert pseudo["class_name"].tolist() == ["cat"]
    np.testing.assert_array_equal(unpack_grid(pseudo["grid"].iat[0], 2), [[1, 1], [1, 0]])
    assert stat(stats, "unmatched_mentions") == 1  # the dog scored below the threshold
    pseudo, _ = build(
        caps((1, "a cat")), table, Lexicon.from_package(), score_threshold=0.7, grid_size=2
    )
    np.testing.assert_array_equal(unpack_grid(pseudo["grid"].iat[0], 2), [[1, 0], [1, 0]])


def test_classes_never_detected_and_unprocessed_images_are_counted_apart():
    table = dets([(1, "cat", 0.9, LEFT), (2, None, 0, None)])
    pseudo, stats = build(
        caps((1, "an orange cat"), (2, "a cat"), (3, "a cat")),
        table,
        Lexicon.from_package(),
        grid_size=2,
    )
    assert len(pseudo) == 1
    assert stat(stats, "mentions_of_classes_never_detected") == 1  # "orange"
    assert stat(stats, "unmatched_mentions") == 2  # cats of images 2 and 3
    assert stat(stats, "captions_image_not_in_detections") == 1  # image 3


def test_empty_union_mask_is_counted_not_labelled():
    table = dets([(1, "cat", 0.9, np.zeros((4, 4), np.uint8))])
    pseudo, stats = build(caps((1, "a cat")), table, Lexicon.from_package())
    assert pseudo.empty and list(pseudo.columns[:6]) == [
        "caption_id",
        "image_id",
        "token_position",
        "class_name",
        "grid_size",
        "grid",
    ]
    assert stat(stats, "empty_mask_mentions") == 1


def test_bad_inputs_raise_clear_errors():
    lex = Lexicon.from_package()
    good = dets([(1, "cat", 0.9, LEFT)])
    with pytest.raises(MatchingInputError, match=r"captions table lacks column\(s\) \['tokens'\]"):
        build(caps((1, "a cat")).drop(columns="tokens"), good, lex)
    with pytest.raises(MatchingInputError, match=r"detections table lacks .*'rle_counts'"):
        build(caps((1, "a cat")), good.drop(columns="rle_counts"), lex)
    corrupt = good.copy()
    corrupt["rle_counts"] = "0 1"
    with pytest.raises(MatchingInputError, match="corrupt mask of class 'cat' in image 1"):
        build(caps((1, "a cat")), corrupt, lex)
    wrong = good.copy()
    wrong["height"] = 5
    with pytest.raises(MatchingInputError, match="image 1"):
        build(caps((1, "a cat")), wrong, lex)
    odd = good.copy()
    odd["status"] = "maybe"
    with pytest.raises(MatchingInputError, match="unknown status"):
        build(caps((1, "a cat")), odd, lex)
    nomask = good.copy()
    nomask["rle_counts"] = None
    with pytest.raises(MatchingInputError, match="image 1 has an 'ok' row without"):
        build(caps((1, "a cat")), nomask, lex)
    text = caps((1, "a cat"))
    text["tokens"] = ["a cat"]
    with pytest.raises(MatchingInputError, match="caption_id 0 has tokens of type str"):
        build(text, good, lex)
    with pytest.raises(MatchingInputError, match="cell_threshold"):
        build(caps((1, "a cat")), good, lex, cell_threshold=0)
    with pytest.raises(MatchingInputError, match="grid_size"):
        build(caps((1, "a cat")), good, lex, grid_size=0)


def test_settings_come_from_the_caller_not_from_code_defaults():
    # The values live in conf/base/parameters_matching.yml only.
    with pytest.raises(TypeError, match="score_threshold"):
        build_pseudo_labels(
            caps((1, "a cat")), dets([(1, "cat", 0.9, LEFT)]), Lexicon.from_package()
        )


def node(captions, detections, **overrides):
    """The matching node with conf/base's ``matching`` section, single keys overridden."""
    return match_captions(captions, detections, section("matching", progress=False, **overrides))


@pytest.mark.parametrize(
    ("detections", "text", "reason"),
    [
        # Every detection below matching.score_threshold (0.5 in conf/base).
        (
            [(1, "cat", 0.3, LEFT), (1, "cat", 0.2, TOP)],
            "a cat",
            "no detection has score >= matching.score_threshold=0.5 (all 2 detected instances "
            "are below it)",
        ),
        # The detector found nothing anywhere.
        ([(1, None, 0, None)], "a cat", "holds no instance at all (only no_detections rows)"),
        # No caption word in the lexicon.
        ([(1, "cat", 0.9, LEFT)], "a red thing", "1 of 1 captions name no class the lexicon"),
        # A custom detector's classes that no caption names.
        (
            [(1, "zebra", 0.9, LEFT)],
            "a cat",
            "1 of 1 mentions name classes never detected above the threshold (cat ×1); the "
            "detected classes are zebra ×1",
        ),
    ],
)
def test_no_pseudo_label_stops_matching_with_the_reason(detections, text, reason):
    table = dets(detections)
    with pytest.raises(NoPseudoLabelsError) as err:
        node(caps((1, text)), table)
    message = str(err.value)
    assert "no caption token got a pseudo-label (0 of 1 captions)" in message
    assert reason in message and "matching.allow_empty=true" in message


def test_allow_empty_writes_empty_tables_with_a_warning(caplog):
    table = dets([(1, "cat", 0.3, LEFT)])
    with caplog.at_level("WARNING", logger="ica_captioning.matching.pseudo_labels"):
        pseudo, stats = node(caps((1, "a cat")), table, allow_empty=True)
    assert pseudo.empty and stat(stats, "matched_mentions") == 0
    assert stat(stats, "instances_below_score_threshold") == 1
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "no caption token got a pseudo-label" in warning.getMessage()
    assert "score_threshold=0.5" in warning.getMessage()


def test_low_share_of_labelled_captions_warns_with_share_and_threshold(caplog):
    # 1 of 3 captions labelled: 33.3 % < matching.min_labelled_fraction (0.5 in conf/base).
    table = dets([(1, "cat", 0.9, LEFT), (2, "zebra", 0.9, TOP)])
    captions = caps((1, "a cat"), (2, "a cat"), (3, "an orange thing"))
    with caplog.at_level("WARNING", logger="ica_captioning.matching.pseudo_labels"):
        pseudo, stats = node(captions, table)
    assert len(pseudo) == 1
    assert stat(stats, "captions_with_mention") == 3
    assert stat(stats, "class_mentions_never_detected", "orange") == 1
    (low,) = [r for r in caplog.records if "min_labelled_fraction" in r.getMessage()]
    text = low.getMessage()
    assert low.levelname == "WARNING"
    assert "only 33.3% of the captions (1 of 3) got at least one pseudo-label" in text
    assert "below matching.min_labelled_fraction=0.5" in text
    assert "1 of 3 captions belong to images absent from the detections table" in text
    assert "1 mentions name a class detected elsewhere" in text  # the cat of image 2
    # At or above the threshold: no such warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="ica_captioning.matching.pseudo_labels"):
        node(captions, table, min_labelled_fraction=0.3)
        check_pseudo_labels(
            stats, score_threshold=0.5, allow_empty=False, min_labelled_fraction=1 / 3
        )
    assert not [r for r in caplog.records if "min_labelled_fraction" in r.getMessage()]
