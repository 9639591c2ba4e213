from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pytest

from ica_captioning.experiments.masks import (
    MASK_KINDS,
    MaskTransformError,
    box_masks,
    degrade_masks,
    mask_iou,
    random_blob_masks,
    shuffle_masks,
    transform_labels,
)
from ica_captioning.matching.grid import pack_grids, unpack_grid

G = 14


def random_masks(n: int, seed: int, g: int = G) -> np.ndarray:
    """[n, g, g] masks made of 1-3 random rectangles / discs (realistic merged-object grids)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:g, :g]
    out = np.zeros((n, g, g), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                h, w = rng.integers(1, 7, size=2)
                y, x = rng.integers(0, g - h + 1), rng.integers(0, g - w + 1)
                out[i, y : y + h, x : x + w] = True
            else:
                r = rng.uniform(1.0, 3.5)
                cy, cx = rng.uniform(0, g, size=2)
                out[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def make_table(masks: np.ndarray, captions_per_image: int = 1) -> pd.DataFrame:
    """pseudo_labels with `captions_per_image` rows (identical grids) per mask."""
    masks = np.repeat(masks, captions_per_image, axis=0)
    p = len(masks)
    return pd.DataFrame(
        {
            "caption_id": np.arange(p, dtype=np.int64) + 1000,
            "image_id": np.arange(p, dtype=np.int64) // captions_per_image,
            "token_position": np.arange(p, dtype=np.int64) % 7,
            "class_name": np.array(["dog", "cat", "person"], dtype=object)[np.arange(p) % 3],
            "grid_size": np.full(p, masks.shape[1], dtype=np.int64),
            "grid": pack_grids(masks),
        }
    )


def grids_of(table: pd.DataFrame) -> np.ndarray:
    """Independent unpacking, one row at a time: [P, G, G]."""
    return np.stack([unpack_grid(b, int(s)) for b, s in zip(table["grid"], table["grid_size"])])


def ref_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = []
    for x, y in zip(a, b):
        union = np.logical_or(x, y).sum()
        out.append(1.0 if union == 0 else np.logical_and(x, y).sum() / union)
    return np.array(out)


def is_4_connected(mask: np.ndarray) -> bool:
    """BFS over the on-cells from one of them (scipy is not installed)."""
    cells = list(zip(*np.nonzero(mask)))
    if not cells:
        return True
    seen = {cells[0]}
    queue = deque([cells[0]])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < mask.shape[0] and 0 <= nc < mask.shape[1]:
                if mask[nr, nc] and (nr, nc) not in seen:
                    seen.add((nr, nc))
                    queue.append((nr, nc))
    return len(seen) == len(cells)


@pytest.fixture(scope="module")
def realistic() -> pd.DataFrame:
    return make_table(random_masks(300, seed=11))


@pytest.fixture(scope="module")
def shared() -> pd.DataFrame:
    """100 images x 3 captions: byte-identical grids within an image."""
    return make_table(random_masks(100, seed=5), captions_per_image=3)


def assert_only_grid_changed(before: pd.DataFrame, after: pd.DataFrame) -> None:
    assert list(after.columns) == list(before.columns)
    assert after.index.equals(before.index)
    others = [c for c in before.columns if c != "grid"]
    pd.testing.assert_frame_equal(after[others], before[others])
    assert all(
        isinstance(b, bytes) and len(b) == len(before["grid"].iloc[0]) for b in after["grid"]
    )


# ------------------------------------------------------------------ shuffled


def test_shuffle_never_own_or_identical_grid(shared):
    snapshot = shared.copy(deep=True)
    out = shuffle_masks(shared, seed=0)
    pd.testing.assert_frame_equal(shared, snapshot)  # input untouched
    assert_only_grid_changed(shared, out)
    inputs = set(shared["grid"])
    assert all(b in inputs for b in out["grid"])
    assert (out["grid"].to_numpy() != shared["grid"].to_numpy()).all()
    # a feasible table gets a permutation: the multiset of grids is kept exactly
    assert sorted(out["grid"]) == sorted(shared["grid"])


def test_shuffle_deterministic_per_seed(shared):
    a = shuffle_masks(shared, seed=3)
    b = shuffle_masks(shared, seed=3)
    c = shuffle_masks(shared, seed=4)
    assert a["grid"].tolist() == b["grid"].tolist()
    assert a["grid"].tolist() != c["grid"].tolist()


def test_shuffle_dominant_grid_falls_back_but_stays_valid():
    masks = np.zeros((10, G, G), dtype=bool)
    masks[:, 0, 0] = True  # rows 0..7 identical
    masks[8, 5, 5] = True
    masks[9, 9, 9] = True
    table = make_table(masks)
    for seed in range(5):
        out = shuffle_masks(table, seed=seed)
        assert (out["grid"].to_numpy() != table["grid"].to_numpy()).all()
        assert set(out["grid"]) <= set(table["grid"])
        # the 8 identical rows can only take one of the two other grids
        assert set(out["grid"].iloc[:8]) <= {table["grid"].iloc[8], table["grid"].iloc[9]}


def test_shuffle_identical_grids_raise():
    masks = np.zeros((4, G, G), dtype=bool)
    masks[:, 2:4, 2:4] = True
    with pytest.raises(MaskTransformError, match="all 4 grid\\(s\\) are identical"):
        shuffle_masks(make_table(masks), seed=0)
    with pytest.raises(MaskTransformError, match="identical"):
        shuffle_masks(make_table(masks[:1]), seed=0)


# ------------------------------------------------------------------ random blobs


def test_random_blobs_keep_area_and_are_connected(realistic):
    truth = grids_of(realistic)
    out = random_blob_masks(realistic, seed=1)
    assert_only_grid_changed(realistic, out)
    blobs = grids_of(out)
    np.testing.assert_array_equal(blobs.sum(axis=(1, 2)), truth.sum(axis=(1, 2)))
    assert all(is_4_connected(b) for b in blobs)
    differs = (blobs != truth).any(axis=(1, 2))
    assert differs.mean() > 0.9
    assert random_blob_masks(realistic, seed=1)["grid"].tolist() == out["grid"].tolist()
    assert random_blob_masks(realistic, seed=2)["grid"].tolist() != out["grid"].tolist()


def test_random_blobs_empty_and_full_grids():
    masks = np.zeros((3, G, G), dtype=bool)
    masks[1] = True
    masks[2, 3, 4:9] = True
    blobs = grids_of(random_blob_masks(make_table(masks), seed=0))
    assert not blobs[0].any()
    assert blobs[1].all()
    assert blobs[2].sum() == 5 and is_4_connected(blobs[2])


# ------------------------------------------------------------------ boxes


def test_box_of_hand_drawn_mask():
    mask = np.zeros((G, G), dtype=bool)
    mask[3, 4] = True  # an L shape ...
    mask[4:7, 4] = True
    mask[6, 5:7] = True
    mask[9, 2] = True  # ... and an isolated cell of another instance
    expected = np.zeros((G, G), dtype=bool)
    expected[3:10, 2:7] = True  # rows 3..9, columns 2..6
    empty = np.zeros((G, G), dtype=bool)
    out = grids_of(box_masks(make_table(np.stack([mask, empty]))))
    np.testing.assert_array_equal(out[0], expected)
    assert not out[1].any()


def test_boxes_are_minimal_supersets(realistic):
    truth = grids_of(realistic)
    out = box_masks(realistic)
    assert_only_grid_changed(realistic, out)
    boxes = grids_of(out)
    assert (boxes >= truth).all()
    for m, b in zip(truth, boxes):
        rows, cols = np.nonzero(m)
        ref = np.zeros_like(m)
        ref[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        np.testing.assert_array_equal(b, ref)


# ------------------------------------------------------------------ degraded


def test_degraded_levels_hit_target_mean_iou(realistic):
    truth = grids_of(realistic)
    means = {}
    for target in (0.75, 0.5, 0.25):
        out = degrade_masks(realistic, target, seed=7)
        assert_only_grid_changed(realistic, out)
        got = grids_of(out)
        iou = ref_iou(truth, got)
        np.testing.assert_allclose(mask_iou(realistic, out), iou)
        assert abs(iou.mean() - target) <= 0.05, (target, iou.mean())
        # per mask as close as practical: most rows are (almost) exactly on target
        assert np.mean(np.abs(iou - target) <= 0.05) > 0.8
        assert got.any(axis=(1, 2)).all()  # non-empty stays non-empty
        means[target] = iou.mean()
    assert means[0.75] > means[0.5] > means[0.25]


def test_degraded_exact_where_achievable(realistic):
    # every area a admits k/m = 1/2 and 1/4 with k <= a <= m <= 196 (k = ceil(a/2), ceil(a/4))
    truth = grids_of(realistic)
    for target in (0.5, 0.25):
        got = grids_of(degrade_masks(realistic, target, seed=1))
        np.testing.assert_allclose(ref_iou(truth, got), target)


def test_degraded_stays_near_the_object(realistic):
    truth = grids_of(realistic)
    got = grids_of(degrade_masks(realistic, 0.5, seed=2))
    added = got & ~truth
    # distance of every added cell to the nearest true cell, brute force
    for m, a in zip(truth[:60], added[:60]):
        on = np.argwhere(m)
        for cell in np.argwhere(a):
            assert np.abs(on - cell).sum(axis=1).min() <= 6


def test_degraded_deterministic_and_empty_stays_empty(realistic):
    a = degrade_masks(realistic, 0.5, seed=3)
    assert a["grid"].tolist() == degrade_masks(realistic, 0.5, seed=3)["grid"].tolist()
    assert a["grid"].tolist() != degrade_masks(realistic, 0.5, seed=4)["grid"].tolist()
    masks = np.concatenate([grids_of(realistic)[:20], np.zeros((1, G, G), dtype=bool)])
    out = grids_of(degrade_masks(make_table(masks), 0.5, seed=0))
    assert not out[-1].any()


def test_degraded_tolerance_and_target_errors():
    one = np.zeros((1, G, G), dtype=bool)
    one[0, 4, 4] = True  # a single cell can only give IoU 1, 1/2, 1/3 ...
    table = make_table(one)
    with pytest.raises(MaskTransformError, match="tolerance"):
        # 0.9 lies between 1/2 and 1; whichever is drawn is > 0.05 away
        degrade_masks(table, 0.9, seed=0)
    out = degrade_masks(table, 0.9, seed=0, tolerance=None)
    assert mask_iou(table, out)[0] in (0.5, 1.0)
    with pytest.raises(MaskTransformError, match="target_iou must be in"):
        degrade_masks(table, 0.0, seed=0)
    with pytest.raises(MaskTransformError, match="target_iou must be in"):
        degrade_masks(table, 1.5, seed=0)


# ------------------------------------------------------------------ IoU, dispatch, errors


def test_mask_iou_hand_example():
    a = np.zeros((3, G, G), dtype=bool)
    b = np.zeros((3, G, G), dtype=bool)
    a[0, 0:2, 0:2] = True  # 4 cells
    b[0, 0:2, 1:4] = True  # 6 cells, 2 shared -> 2 / 8
    b[2, 5, 5] = True  # empty vs one cell -> 0; row 1 empty vs empty -> 1
    np.testing.assert_allclose(mask_iou(make_table(a), make_table(b)), [0.25, 1.0, 0.0])
    with pytest.raises(MaskTransformError, match="equal length"):
        mask_iou(make_table(a), make_table(b[:2]))


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_transform_labels_dispatch(realistic, kind):
    table = realistic.set_index(realistic.index + 50)  # a non-default index is kept
    snapshot = table.copy(deep=True)
    out = transform_labels(table, kind, seed=0)
    pd.testing.assert_frame_equal(table, snapshot)
    assert_only_grid_changed(table, out)
    if kind == "true":
        assert out["grid"].tolist() == table["grid"].tolist()
    else:
        assert out["grid"].tolist() != table["grid"].tolist()


def test_transform_labels_unknown_kind(realistic):
    with pytest.raises(MaskTransformError, match="valid kinds: true, shuffled, random, boxes"):
        transform_labels(realistic, "blobs", seed=0)


def test_input_errors(realistic):
    small = realistic.head(4)
    with pytest.raises(MaskTransformError, match=r"lacks column\(s\) \['grid_size'\]"):
        box_masks(small.drop(columns="grid_size"))
    short = small.copy()
    short.loc[short.index[2], "grid"] = b"\x00" * 24
    with pytest.raises(MaskTransformError, match="24 bytes in row 2 .*needs 25"):
        shuffle_masks(short, seed=0)
    mixed = small.copy()
    mixed.loc[mixed.index[1], "grid_size"] = 7
    with pytest.raises(MaskTransformError, match=r"mixes grid sizes \[7, 14\]"):
        random_blob_masks(mixed, seed=0)
    wrong_type = small.copy()
    wrong_type["grid"] = wrong_type["grid"].astype(object)
    wrong_type.loc[wrong_type.index[0], "grid"] = None
    with pytest.raises(MaskTransformError, match="grid must be bytes"):
        degrade_masks(wrong_type, 0.5, seed=0)


def test_other_grid_size_and_empty_table():
    masks = random_masks(30, seed=2, g=7)
    table = make_table(masks)  # 7x7: 49 bits -> 7 bytes
    out = grids_of(random_blob_masks(table, seed=0))
    np.testing.assert_array_equal(out.sum(axis=(1, 2)), masks.sum(axis=(1, 2)))
    empty = table.head(0)
    for kind in MASK_KINDS:
        assert len(transform_labels(empty, kind, seed=0)) == 0
