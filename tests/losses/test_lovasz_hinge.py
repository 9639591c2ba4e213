"""Tests of the batched Lovász hinge against the set-function reference and its properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from ica_loss_reference import iou, jaccard_set_loss, lovasz_hinge_pair

from ica_captioning.losses import jaccard_lovasz_weights, lovasz_hinge

# Mix continuous values with a few repeated ones so ties (and exact margins) are common.
SCORE = st.one_of(
    st.floats(-4.0, 4.0, allow_nan=False, width=32),
    st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]),
)


@st.composite
def score_batches(draw, max_n: int = 5, max_l: int = 24):
    """Draw ([N, L] float32 scores, [N, L] bool targets)."""
    n = draw(st.integers(1, max_n))
    num_cells = draw(st.integers(1, max_l))
    scores = draw(arrays(np.float32, (n, num_cells), elements=SCORE))
    targets = draw(arrays(np.bool_, (n, num_cells)))
    return scores, targets


def _reference(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.array([lovasz_hinge_pair(s.tolist(), t.tolist()) for s, t in zip(scores, targets)])


@settings(max_examples=150, deadline=None)
@given(score_batches())
def test_matches_per_pair_reference_float32(batch):
    scores, targets = batch
    got = lovasz_hinge(torch.from_numpy(scores), torch.from_numpy(targets))
    assert got.shape == (scores.shape[0],)
    assert got.dtype == torch.float32
    expected = torch.from_numpy(_reference(scores, targets)).float()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(score_batches())
def test_matches_per_pair_reference_float64(batch):
    scores, targets = batch
    got = lovasz_hinge(torch.from_numpy(scores.astype(np.float64)), torch.from_numpy(targets))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _reference(scores, targets), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(score_batches(), st.floats(0.0, 3.0))
def test_margin_at_least_one_gives_zero(batch, extra):
    magnitudes, targets = batch
    signs = 2.0 * targets.astype(np.float32) - 1.0
    scores = signs * (1.0 + np.abs(magnitudes) + np.float32(extra))
    got = lovasz_hinge(torch.from_numpy(scores), torch.from_numpy(targets))
    assert torch.equal(got, torch.zeros_like(got))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_zero_one_margin_scores_give_jaccard_loss(data):
    """Scores c·sign(y), c ∈ {0, 1}: errors are the indicator of M = {c = 0}, loss = ΔJ(M)."""
    n = data.draw(st.integers(1, 4))
    num_cells = data.draw(st.integers(1, 20))
    targets = data.draw(arrays(np.bool_, (n, num_cells)))
    correct = data.draw(arrays(np.bool_, (n, num_cells)))
    scores = correct.astype(np.float64) * (2.0 * targets - 1.0)
    got = lovasz_hinge(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    # The prediction that is right exactly on the `correct` cells.
    preds = np.where(correct, targets, ~targets)
    expected = [1.0 - iou(p.tolist(), t.tolist()) for p, t in zip(preds, targets)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.floats(1.0, 5.0))
def test_signed_margin_predictions_scale_jaccard_loss(data, margin):
    """Scores ±margin from a binary prediction: wrong cells err by 1 + margin, right ones ≤ 0."""
    n = data.draw(st.integers(1, 4))
    num_cells = data.draw(st.integers(1, 20))
    targets = data.draw(arrays(np.bool_, (n, num_cells)))
    preds = data.draw(arrays(np.bool_, (n, num_cells)))
    scores = margin * (2.0 * preds - 1.0)
    got = lovasz_hinge(torch.from_numpy(scores), torch.from_numpy(targets)).numpy()
    expected = [(1 + margin) * (1 - iou(p.tolist(), t.tolist())) for p, t in zip(preds, targets)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(score_batches())
def test_upper_bounds_jaccard_loss_of_thresholded_prediction(batch):
    scores, targets = batch
    got = lovasz_hinge(torch.from_numpy(scores.astype(np.float64)), torch.from_numpy(targets))
    for row, s, t in zip(got.tolist(), scores, targets):
        assert row >= 1.0 - iou((s > 0).tolist(), t.tolist()) - 1e-12


@settings(max_examples=80, deadline=None)
@given(st.data(), st.floats(0.0, 1.0))
def test_convex_along_random_segments(data, t):
    n = data.draw(st.integers(1, 4))
    num_cells = data.draw(st.integers(1, 20))
    a = data.draw(arrays(np.float64, (n, num_cells), elements=st.floats(-4, 4)))
    b = data.draw(arrays(np.float64, (n, num_cells), elements=st.floats(-4, 4)))
    targets = torch.from_numpy(data.draw(arrays(np.bool_, (n, num_cells))))
    f_a = lovasz_hinge(torch.from_numpy(a), targets)
    f_b = lovasz_hinge(torch.from_numpy(b), targets)
    f_mid = lovasz_hinge(torch.from_numpy(t * a + (1 - t) * b), targets)
    assert bool((f_mid <= t * f_a + (1 - t) * f_b + 1e-9).all())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_invariant_to_order_of_tied_scores(data):
    """Permuting the cells (scores and mask together) changes which tied cell sorts first."""
    n = data.draw(st.integers(1, 4))
    num_cells = data.draw(st.integers(2, 24))
    # Only a few distinct values: most cells are tied with several others.
    values = st.sampled_from([-1.5, -1.0, -0.25, 0.0, 0.25, 1.0, 3.0])
    scores = data.draw(arrays(np.float32, (n, num_cells), elements=values))
    targets = data.draw(arrays(np.bool_, (n, num_cells)))
    perm = np.array(data.draw(st.permutations(range(num_cells))))
    base = lovasz_hinge(torch.from_numpy(scores), torch.from_numpy(targets))
    permuted = lovasz_hinge(torch.from_numpy(scores[:, perm]), torch.from_numpy(targets[:, perm]))
    torch.testing.assert_close(permuted, base, rtol=1e-6, atol=1e-6)


def _tie_free_scores(rng: np.random.Generator, n: int, num_cells: int, targets: np.ndarray):
    """Scores whose hinge errors are distinct, ≥ 0.05 apart and ≥ 0.05 away from the relu kink."""
    grid = np.concatenate([np.arange(-2.0, -0.04, 0.1), np.arange(0.05, 3.0, 0.1)])
    errors = np.stack([rng.choice(grid, size=num_cells, replace=False) for _ in range(n)])
    errors = errors + rng.uniform(-0.02, 0.02, size=errors.shape)
    return (1.0 - errors) * (2.0 * targets - 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_gradcheck_float64_tie_free(seed):
    rng = np.random.default_rng(seed)
    n, num_cells = 3, 12
    targets = rng.random((n, num_cells)) < 0.4
    targets[0] = False  # one empty mask
    targets[1, :] = True if seed % 2 else targets[1]  # sometimes an all-foreground mask
    scores = torch.tensor(_tie_free_scores(rng, n, num_cells, targets), requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: lovasz_hinge(s, torch.from_numpy(targets)), (scores,), eps=1e-6, atol=1e-6
    )


def test_gradient_is_minus_sign_times_jaccard_increment():
    """Hand-computed: L = 3, mask {0}, errors 2 > 1.5 > 0.5 in order cells 1, 0, 2."""
    scores = torch.tensor([[-0.5, 1.0, -0.5]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[True, False, False]])
    # errors: cell0 1 − (−0.5) = 1.5, cell1 1 + 1 = 2, cell2 1 − 0.5 = 0.5.
    # ΔJ: {1} → 1/2, {1, 0} → 2/2 = 1, {1, 0, 2} → 3/3 = 1; increments 1/2, 1/2, 0.
    loss = lovasz_hinge(scores, targets)
    torch.testing.assert_close(loss, torch.tensor([2 * 0.5 + 1.5 * 0.5], dtype=torch.float64))
    loss.sum().backward()
    # d error / d score = −sign: cell0 −1, cell1 +1, cell2 +1 (cell2 weight 0).
    torch.testing.assert_close(scores.grad, torch.tensor([[-0.5, 0.5, 0.0]], dtype=torch.float64))


def test_weights_match_set_function_differences():
    rng = np.random.default_rng(3)
    gt_sorted = rng.random((6, 15)) < 0.3
    gt_sorted[0] = False
    gt_sorted[1] = True
    weights = jaccard_lovasz_weights(torch.from_numpy(gt_sorted.astype(np.float64))).numpy()
    for row, g in zip(weights, gt_sorted):
        fg = {i for i, y in enumerate(g) if y}
        expected = [
            jaccard_set_loss(set(range(i + 1)), fg) - jaccard_set_loss(set(range(i)), fg)
            for i in range(len(g))
        ]
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-12)


def test_empty_mask_is_finite_and_costs_the_largest_error():
    scores = torch.tensor([[0.3, -2.0, 0.9], [-1.0, -1.0, -1.0]], requires_grad=True)
    targets = torch.zeros(2, 3, dtype=torch.bool)
    loss = lovasz_hinge(scores, targets)
    # Empty mask: ΔJ(M) = 1 for any M ≠ ∅, so the loss is the largest hinge error.
    torch.testing.assert_close(loss, torch.tensor([1.9, 0.0]))
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    torch.testing.assert_close(scores.grad, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))


def test_all_foreground_mask():
    scores = torch.tensor([[2.0, 0.0, -1.0, 1.0]])
    targets = torch.ones(1, 4, dtype=torch.bool)
    # errors −1, 1, 2, 0 → sorted 2 (cell2), 1 (cell1); ΔJ = |M| / 4: increments 1/4 each.
    torch.testing.assert_close(lovasz_hinge(scores, targets), torch.tensor([0.75]))


def test_single_cell_and_zero_cells():
    torch.testing.assert_close(
        lovasz_hinge(torch.tensor([[0.25], [0.25]]), torch.tensor([[True], [False]])),
        torch.tensor([0.75, 1.25]),
    )
    empty = torch.zeros(3, 0, requires_grad=True)
    out = lovasz_hinge(empty, torch.zeros(3, 0, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(3))
    out.sum().backward()


def test_numeric_zero_one_targets_equal_bool_targets():
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.normal(size=(4, 9)).astype(np.float32))
    targets = torch.from_numpy(rng.random((4, 9)) < 0.5)
    expected = lovasz_hinge(scores, targets)
    for dtype in (torch.uint8, torch.int64, torch.float32):
        torch.testing.assert_close(lovasz_hinge(scores, targets.to(dtype)), expected)


def test_half_precision_is_upcast():
    scores = torch.tensor([[0.5, -0.25, 1.5]], dtype=torch.bfloat16)
    targets = torch.tensor([[True, False, False]])
    out = lovasz_hinge(scores, targets)
    assert out.dtype == torch.float32
    expected = lovasz_hinge_pair(scores.float()[0].tolist(), targets[0].tolist())
    assert out.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("scores", "targets", "error", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.bool), ValueError, r"\[N, L\]"),
        (torch.zeros(2, 4), torch.zeros(2, 5, dtype=torch.bool), ValueError, "does not match"),
        (torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4), TypeError, "floating"),
        (torch.zeros(2, 4), torch.full((2, 4), 0.5), ValueError, "only 0 and 1"),
        (torch.zeros(2, 4), torch.full((2, 4), 255, dtype=torch.uint8), ValueError, "255"),
    ],
)
def test_bad_input_raises(scores, targets, error, match):
    with pytest.raises(error, match=match):
        lovasz_hinge(scores, targets)
