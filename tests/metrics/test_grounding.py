import numpy as np
import pandas as pd
import pytest

from ica_captioning.matching import pack_grids
from ica_captioning.metrics import grounding as gr

# Hand-computed cases on a 2x2 grid (L = 4 cells, row-major).
ALPHAS = np.array(
    [
        [0.5, 0.3, 0.2, 0.0],
        [0.1, 0.2, 0.3, 0.4],
        [0.25, 0.25, 0.25, 0.25],
        [2.0, 0.0, 0.0, 2.0],  # not normalised: AC divides by the total
    ]
)
MASKS = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=bool)


def test_attention_correctness_hand_computed():
    np.testing.assert_allclose(gr.attention_correctness(ALPHAS, MASKS), [0.7, 0.7, 0.25, 0.5])


def test_topk_iou_hand_computed():
    # k = |mask|: row 0 top-2 = {0, 1} vs {0, 2} -> 1/3; row 1 top-2 = {3, 2} = mask -> 1;
    # row 2 ties -> first cell {0} = mask -> 1; row 3 top-1 (tie 0/3 -> cell 0) -> 1.
    np.testing.assert_allclose(gr.topk_iou(ALPHAS, MASKS), [1 / 3, 1.0, 1.0, 1.0])


def test_mass50_iou_hand_computed():
    # row 0: {0} (0.5 reaches 50 %) vs {0, 2} -> 1/2; row 1: {3, 2} -> 1;
    # row 2: {0, 1} vs {0} -> 1/2; row 3: {0} (0.5 of the normalised mass) -> 1.
    np.testing.assert_allclose(gr.mass_iou(ALPHAS, MASKS, mass=0.5), [0.5, 1.0, 0.5, 1.0])
    # mass 1.0 takes every attended cell (row 0: {0, 1, 2}) -> IoU 2/3.
    assert gr.mass_iou(ALPHAS[:1], MASKS[:1], mass=1.0)[0] == pytest.approx(2 / 3)


def test_word_scores_and_chance():
    table = gr.word_scores(ALPHAS, MASKS, mass=0.5)
    np.testing.assert_allclose(table["attention_correctness_chance"], [0.5, 0.5, 0.25, 0.25])
    assert table["mask_cells"].tolist() == [2, 2, 1, 1]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[N, L\]"):
        gr.attention_correctness(ALPHAS, MASKS[:, :3])
    with pytest.raises(ValueError, match="no cell"):
        gr.attention_correctness(ALPHAS[:1], np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        gr.topk_iou(-ALPHAS, MASKS)
    with pytest.raises(ValueError, match="mass"):
        gr.mass_iou(ALPHAS, MASKS, mass=0.0)


def test_random_against_loop_reference():
    rng = np.random.default_rng(0)
    alphas = rng.dirichlet(np.ones(9), size=50)
    masks = rng.random((50, 9)) < 0.3
    masks[:, 0] |= ~masks.any(1)
    got = gr.topk_iou(alphas, masks)
    for a, m, g in zip(alphas, masks, got):
        k = m.sum()
        top = set(np.argsort(-a, kind="stable")[:k])
        cells = set(np.flatnonzero(m))
        assert g == pytest.approx(len(top & cells) / len(top | cells))


def _grid(cells, g=2):
    m = np.zeros((1, g, g), bool)
    m.reshape(1, -1)[0, cells] = True
    return pack_grids(m)[0]


def test_mention_pairs_and_pair_scores():
    captions = pd.DataFrame(
        {
            "caption_key": ["a", "b"],
            "image_id": [1, 2],
            "tokens": [
                ["a", "red", "circle", "left", "of", "two", "blue", "squares", "and", "a", "star"],
                ["a", "heart"],
            ],
        }
    )
    grids = pd.DataFrame(
        {
            "image_id": [1, 1, 2],
            "class_name": ["circle", "square", "cross"],  # no star in image 1, no heart in 2
            "grid_size": [2, 2, 2],
            "grid": [_grid([0]), _grid([2, 3]), _grid([1])],
        }
    )
    pairs = gr.mention_pairs(captions, grids)
    assert pairs[["caption_key", "token_position", "class_name"]].values.tolist() == [
        ["a", 2, "circle"],
        ["a", 7, "square"],
    ]
    att = np.full((11, 4), 0.25)
    att[2] = [0.7, 0.1, 0.1, 0.1]
    att[7] = [0.0, 0.2, 0.4, 0.4]
    scores = gr.pair_scores(pairs, {"a": att, "b": np.full((2, 4), 0.25)})
    np.testing.assert_allclose(scores["attention_correctness"], [0.7, 0.8])
    np.testing.assert_allclose(scores["attention_iou_topk"], [1.0, 1.0])
    summary = gr.summarize(scores).set_index("metric")
    assert summary.loc["attention_correctness", "value"] == pytest.approx(0.75)
    assert summary.loc["attention_correctness", "count"] == 2
    assert summary.loc["attention_correctness_chance", "value"] == pytest.approx((0.25 + 0.5) / 2)


def test_pair_scores_errors():
    pairs = pd.DataFrame(
        {"caption_key": ["a"], "token_position": [5], "grid_size": [2], "grid": [_grid([0])]}
    )
    with pytest.raises(ValueError, match="token_position 5"):
        gr.pair_scores(pairs, {"a": np.full((2, 4), 0.25)})
    pairs["token_position"] = 0
    with pytest.raises(ValueError, match="grid 2x2"):
        gr.pair_scores(pairs, {"a": np.full((2, 9), 1 / 9)})


def test_summarize_empty():
    empty = gr.pair_scores(
        pd.DataFrame(columns=["caption_key", "token_position", "grid_size", "grid"]), {}
    )
    out = gr.summarize(empty)
    assert out["count"].tolist() == [0] * len(gr.WORD_METRICS)
    assert out["value"].isna().all()


def test_grounding_words_combinations_and_pseudo_labels_past_the_caption():
    # Image 1 (2x2 grid) has a circle in cell 0; caption 10 is its only reference.
    circle = _grid([0])
    generated = pd.DataFrame(
        {
            "image_id": [1],
            "tokens": [["a", "circle"]],
            "grid_size": [2],
            "attention": [np.array([0.25] * 4 + [0.7, 0.1, 0.1, 0.1], np.float32)],  # [2 * 4]
        }
    )
    references = pd.DataFrame(
        {
            "caption_id": [10],
            "image_id": [1],
            "tokens": [["circle", "here"]],
            "grid_size": [2],
            "attention": [np.array([0.4, 0.2, 0.2, 0.2] + [0.25] * 4, np.float32)],
        }
    )
    # The second pseudo-label points past the two encoded words: it has no attention map.
    pseudo_labels = pd.DataFrame(
        {"caption_id": [10, 10], "image_id": [1, 1], "token_position": [0, 5],
         "class_name": ["circle", "circle"], "grid_size": [2, 2], "grid": [circle, circle]}
    )  # fmt: skip
    grids = pd.DataFrame(
        {"image_id": [1], "class_name": ["circle"], "grid_size": [2], "grid": [circle],
         "masks": ["pseudo_labels"]}
    )  # fmt: skip
    words = gr.grounding_words(generated, references, pseudo_labels, grids, None, 0.5)
    # No ground-truth grids: only the pseudo-label combinations.
    assert [(c, m) for c, m, _ in words] == [
        ("generated", "pseudo_labels"),
        ("reference", "pseudo_labels"),
    ]
    gen, ref = words[0][2], words[1][2]
    assert gen[["caption_key", "token_position"]].values.tolist() == [[1, 1]]
    assert gen["attention_correctness"].tolist() == pytest.approx([0.7])
    assert ref[["caption_key", "token_position"]].values.tolist() == [[10, 0]]
    assert ref["attention_correctness"].tolist() == pytest.approx([0.4])
    # With ground-truth grids, both caption sources are scored against them too.
    both = pd.concat([grids, grids.assign(masks="ground_truth")], ignore_index=True)
    words = gr.grounding_words(generated, references, pseudo_labels, both, None, 0.5)
    assert [(c, m) for c, m, _ in words][2:] == [
        ("generated", "ground_truth"),
        ("reference", "ground_truth"),
    ]
    assert words[3][2]["attention_correctness"].tolist() == pytest.approx([0.4])
