from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from ica_captioning.detection.rle import (
    decode_masks,
    encode_masks,
    rle_areas,
    rle_boxes,
    rle_string_to_counts,
    rle_strings_to_counts,
    union_rle,
)


def dense_from_runs(runs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Straightforward reference: expand run lengths (column-major, zeros first)."""
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).reshape(w, h).T.astype(np.uint8)


masks_strategy = st.tuples(
    st.integers(1, 5), st.integers(1, 23), st.integers(1, 23), st.integers(0, 2**31 - 1)
).map(lambda a: (np.random.default_rng(a[3]).random((a[0], a[1], a[2])) < 0.4).astype(np.uint8))


@settings(max_examples=25, deadline=None)
@given(masks_strategy)
def test_encode_decode_round_trip(masks):
    counts = encode_masks(masks)
    assert all(isinstance(c, str) for c in counts)
    n, h, w = masks.shape
    np.testing.assert_array_equal(decode_masks(counts, h, w), masks)
    # The strings are exactly pycocotools' (they can be read by any COCO tool).
    for c, m in zip(counts, masks):
        ref = mask_utils.encode(np.asfortranarray(m))["counts"].decode()
        assert c == ref


@settings(max_examples=25, deadline=None)
@given(masks_strategy)
def test_rle_string_to_counts_matches_pycocotools(masks):
    _, h, w = masks.shape
    for c, m in zip(encode_masks(masks), masks):
        runs = rle_string_to_counts(c)
        assert runs.sum() == h * w
        np.testing.assert_array_equal(dense_from_runs(runs, h, w), m)


def test_large_runs_use_several_characters():
    m = np.zeros((300, 400), dtype=np.uint8)
    m[7:290, 3:399] = 1  # runs > 2**15 need multi-character values and deltas
    (c,) = encode_masks(m)
    np.testing.assert_array_equal(dense_from_runs(rle_string_to_counts(c), 300, 400), m)


def test_union_areas_boxes_against_numpy():
    rng = np.random.default_rng(1)
    masks = (rng.random((3, 17, 29)) < 0.2).astype(np.uint8)
    counts = encode_masks(masks)
    union = decode_masks([union_rle(counts, 17, 29)], 17, 29)[0]
    np.testing.assert_array_equal(union, masks.max(axis=0))
    np.testing.assert_array_equal(rle_areas(counts, 17, 29), masks.reshape(3, -1).sum(1))
    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:9] = 1
    np.testing.assert_allclose(rle_boxes(encode_masks(m), 10, 12), [[3, 2, 9, 5]])


def test_empty_inputs():
    assert encode_masks(np.zeros((0, 4, 5))) == []
    assert decode_masks([], 4, 5).shape == (0, 4, 5)
    with pytest.raises(ValueError, match="at least one"):
        union_rle([], 4, 5)
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        encode_masks(np.zeros(5))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ("0 1", "characters"),  # space is below '0'
        ("1o", "truncated"),  # 'o' (0x3F) has the "more follows" bit
        ("4A", "negative"),  # 'A' = 17 with the sign bit: run -15
    ],
)
def test_invalid_compressed_strings_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        rle_string_to_counts(bad)


@settings(max_examples=25, deadline=None)
@given(masks_strategy)
def test_batched_string_decoding_equals_one_by_one(masks):
    counts = encode_masks(masks)
    runs, owner = rle_strings_to_counts(counts)
    for i, c in enumerate(counts):
        np.testing.assert_array_equal(runs[owner == i], rle_string_to_counts(c))


def test_batched_string_decoding_names_the_bad_string():
    good = encode_masks(np.ones((3, 3), dtype=np.uint8))[0]
    with pytest.raises(ValueError, match="compressed RLE 1 is truncated"):
        rle_strings_to_counts([good, "1o", good])
    with pytest.raises(ValueError, match="compressed RLE 2 decodes to a negative"):
        rle_strings_to_counts([good, good, "4A"])
