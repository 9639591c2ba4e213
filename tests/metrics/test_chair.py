import math

import pandas as pd
import pytest

from ica_captioning.metrics.chair import caption_mentions, chair

EMBEDDED = ["circle", "square", "triangle", "star", "heart", "cross", "diamond", "ring",
            "crescent moon"]  # fmt: skip


def test_chair_hand_computed():
    captions = pd.DataFrame(
        {
            "image_id": [1, 2, 3, 1],
            "tokens": [
                "a red circle and a star".split(),  # circle ok, star hallucinated
                "two hearts and a heart".split(),  # 2 mentions, none hallucinated
                "a blue disc".split(),  # disc -> circle, image 3 has nothing
                "a red shape".split(),  # no mention
            ],
        }
    )
    truth = {1: {"circle", "square"}, 2: {"heart"}, 3: set()}
    summary, per_caption = chair(captions, truth, classes=EMBEDDED)
    assert summary["mentions"] == 5 and summary["hallucinated_mentions"] == 2
    assert summary["CHAIR-i"] == pytest.approx(2 / 5)
    assert summary["CHAIR-s"] == pytest.approx(2 / 4)
    assert per_caption["hallucinated"].tolist() == [["star"], [], ["circle"], []]
    assert per_caption["mentions"].tolist()[1] == ["heart", "heart"]


def test_classes_outside_the_evaluated_set_are_ignored():
    found = caption_mentions("a man holds a crescent moon".split(), {"crescent moon"}, EMBEDDED)
    assert found == [(5, "crescent moon", False)]  # head noun "moon"
    # Without the restriction "man" is a (hallucinated) person.
    found_all = caption_mentions("a man holds a crescent moon".split(), {"crescent moon"})
    assert (1, "person", True) in found_all


def test_no_mentions_gives_nan_chair_i():
    summary, _ = chair(pd.DataFrame({"image_id": [1], "tokens": [["nothing"]]}), {1: set()})
    assert math.isnan(summary["CHAIR-i"]) and summary["CHAIR-s"] == 0.0


def test_missing_ground_truth_raises():
    with pytest.raises(ValueError, match="image"):
        chair(pd.DataFrame({"image_id": [7], "tokens": [["a", "star"]]}), {1: set()})
