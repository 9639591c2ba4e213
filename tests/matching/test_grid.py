from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ica_captioning.detection.rle import encode_masks
from ica_captioning.matching.grid import (
    binarize_fractions,
    dense_cell_fractions,
    pack_grids,
    rle_cell_fractions,
    rle_cell_fractions_batch,
    unpack_grid,
)


def kron_reference(mask: np.ndarray, g: int) -> np.ndarray:
    """Independent exact reference: blow every pixel up to g×g sub-pixels, then each cell is
    exactly an H×W block of sub-pixels."""
    h, w = mask.shape
    big = np.kron(mask.astype(np.int64), np.ones((g, g), dtype=np.int64))  # [H g, W g]
    return big.reshape(g, h, g, w).sum(axis=(1, 3)) / (h * w)


def fractions(mask: np.ndarray, g: int) -> np.ndarray:
    (counts,) = encode_masks(mask)
    return rle_cell_fractions(counts, *mask.shape, g)


def test_hand_computed_divisible_grid():
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[0:2, 0:2] = 1  # fills cell (0, 0)
    mask[0, 3] = 1  # a quarter of cell (0, 1)
    expected = np.array([[1.0, 0.25], [0.0, 0.0]])
    np.testing.assert_allclose(fractions(mask, 2), expected)
    grids, fallback = binarize_fractions(expected[None], 0.5)
    np.testing.assert_array_equal(grids[0], [[True, False], [False, False]])
    assert not fallback[0]


def test_hand_computed_non_divisible_grid():
    # 3×3 image, G = 2: cells are 1.5×1.5 pixels (area 2.25); pixel borders cut cells.
    corner = np.zeros((3, 3), dtype=np.uint8)
    corner[0, 0] = 1
    np.testing.assert_allclose(fractions(corner, 2), [[1 / 2.25, 0], [0, 0]])
    centre = np.zeros((3, 3), dtype=np.uint8)
    centre[1, 1] = 1  # a quarter of it in every cell
    np.testing.assert_allclose(fractions(centre, 2), np.full((2, 2), 0.25 / 2.25))
    # Centre row: rows [1, 2) overlap both cell rows by 0.5; the full row spans both columns.
    row = np.zeros((3, 3), dtype=np.uint8)
    row[1, :] = 1
    np.testing.assert_allclose(fractions(row, 2), np.full((2, 2), 0.75 / 2.25))


def test_threshold_is_inclusive_and_tiny_objects_keep_their_best_cell():
    f = np.array([[[0.5, 0.49], [0.0, 0.1]], [[0.2, 0.3], [0.3, 0.1]], [[0, 0], [0, 0]]])
    grids, fallback = binarize_fractions(f, 0.5)
    np.testing.assert_array_equal(grids[0], [[1, 0], [0, 0]])
    np.testing.assert_array_equal(grids[1], [[0, 1], [0, 0]])  # tie -> first in row-major
    np.testing.assert_array_equal(grids[2], [[0, 0], [0, 0]])  # empty stays empty
    assert fallback.tolist() == [False, True, False]
    # A one-pixel object in a 28×28 image on the 14×14 grid covers 1/4 of one cell.
    dot = np.zeros((28, 28), dtype=np.uint8)
    dot[5, 7] = 1
    grids, fallback = binarize_fractions(fractions(dot, 14)[None], 0.5)
    assert fallback[0] and np.argwhere(grids[0]).tolist() == [[2, 3]]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.sampled_from([1, 2, 3, 7, 14]),
    st.floats(0.0, 1.0),
    st.integers(0, 2**31 - 1),
)
def test_rle_reduction_equals_exact_reference(h, w, g, density, seed):
    mask = (np.random.default_rng(seed).random((h, w)) < density).astype(np.uint8)
    ref = kron_reference(mask, g)
    np.testing.assert_allclose(fractions(mask, g), ref, atol=1e-9)
    np.testing.assert_allclose(dense_cell_fractions(mask[None], g)[0], ref, atol=1e-9)


def test_rle_of_wrong_size_raises():
    (counts,) = encode_masks(np.ones((4, 5), dtype=np.uint8))
    with pytest.raises(ValueError, match="covers 20 pixels but its size is 4x6"):
        rle_cell_fractions(counts, 4, 6, 2)


def test_packing_is_np_packbits_row_major():
    rng = np.random.default_rng(3)
    grids = rng.random((5, 14, 14)) < 0.3
    packed = pack_grids(grids)
    assert all(len(p) == 25 for p in packed)  # ceil(196 / 8)
    for p, grid in zip(packed, grids):
        assert p == np.packbits(grid.reshape(196)).tobytes()
        np.testing.assert_array_equal(unpack_grid(p, 14), grid)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.sampled_from([1, 2, 5, 14]),
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
    st.integers(0, 2**31 - 1),
)
def test_batched_reduction_equals_exact_reference(h, w, g, densities, seed):
    rng = np.random.default_rng(seed)
    masks = np.stack([(rng.random((h, w)) < d).astype(np.uint8) for d in densities])
    batch = rle_cell_fractions_batch(encode_masks(masks), h, w, g)
    for got, mask in zip(batch, masks):
        np.testing.assert_allclose(got, kron_reference(mask, g), atol=1e-9)


def test_batched_reduction_names_the_bad_mask():
    good = encode_masks(np.ones((4, 5), dtype=np.uint8))
    other = encode_masks(np.ones((4, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="RLE mask 1 covers 24 pixels"):
        rle_cell_fractions_batch(good + other, 4, 5, 2)
