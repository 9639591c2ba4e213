"""Tests of the ICA loss: mappings, layouts, validity masks, heads, edge cases, precision."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from ica_loss_reference import lovasz_hinge_pair, map_scores

from ica_captioning.losses import MAPPINGS, attention_to_scores, ica_loss


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reference_ica(alpha, targets, valid, mapping) -> float:
    """Loop over (b, t), keep valid pairs, map, Lovász hinge per pair, mean; 0 if none."""
    losses = [
        lovasz_hinge_pair(map_scores(alpha[b, t].tolist(), mapping), targets[b, t].tolist())
        for b in range(alpha.shape[0])
        for t in range(alpha.shape[1])
        if valid[b, t]
    ]
    return float(np.mean(losses)) if losses else 0.0


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(MAPPINGS))
def test_matches_per_pair_reference(data, mapping):
    b, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    num_cells = data.draw(st.integers(1, 16))
    logits = data.draw(arrays(np.float64, (b, t, num_cells), elements=st.floats(-6, 6)))
    alpha = _softmax(logits)
    targets = data.draw(arrays(np.bool_, (b, t, num_cells)))
    valid = data.draw(arrays(np.bool_, (b, t)))
    got = ica_loss(
        torch.from_numpy(alpha.astype(np.float32)),
        torch.from_numpy(targets),
        torch.from_numpy(valid),
        mapping=mapping,
    )
    assert got.dtype == torch.float32 and got.dim() == 0
    expected = _reference_ica(alpha.astype(np.float32), targets, valid, mapping)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("num_cells", [4, 49, 196])
@pytest.mark.parametrize("k", [1, 3])
def test_hand_computed_values_scaled_mapping(num_cells, k):
    targets = torch.zeros(1, num_cells, dtype=torch.bool)
    targets[0, :k] = True
    uniform = torch.full((1, num_cells), 1.0 / num_cells)
    # Uniform: mask cells score 1 (error 0), others −1 → 1 + 1 = 2; ΔJ(background) = (L−k)/L.
    assert ica_loss(uniform, targets, mapping="scaled").item() == pytest.approx(
        2 * (num_cells - k) / num_cells
    )
    # All mass spread on the mask: every mask cell ≥ 1/L, zero elsewhere → perfect, loss 0.
    on_mask = targets.float() / k
    assert ica_loss(on_mask, targets, mapping="scaled").item() == 0.0
    # One-hot on one mask cell: the other k−1 mask cells score −1 (error 2); ΔJ = (k−1)/k.
    one_hot = torch.zeros(1, num_cells)
    one_hot[0, 0] = 1.0
    assert ica_loss(one_hot, targets, mapping="scaled").item() == pytest.approx(2 * (k - 1) / k)


def test_raw_attention_is_flat_but_scaled_is_not():
    """Why the mapping exists: with raw α the loss is ≈ 1 whatever the model attends to."""
    num_cells, k = 196, 3
    targets = torch.zeros(1, num_cells, dtype=torch.bool)
    targets[0, :k] = True
    uniform = torch.full((1, num_cells), 1.0 / num_cells)
    pointing = torch.zeros(1, num_cells)
    pointing[0, 0] = 1.0  # all mass on one mask cell
    raw_uniform = ica_loss(uniform, targets, mapping="identity").item()
    raw_pointing = ica_loss(pointing, targets, mapping="identity").item()
    # Hand-computed: uniform → (1 + 1/L)(L−k)/L + (1 − 1/L) k/L; pointing → ΔJ(L−1 cells) = (L−1)/L.
    inv = 1.0 / num_cells
    assert raw_uniform == pytest.approx((1 + inv) * (num_cells - k) * inv + (1 - inv) * k * inv)
    assert raw_pointing == pytest.approx((num_cells - 1) * inv)
    assert abs(raw_uniform - 1) < 0.01 and abs(raw_pointing - 1) < 0.01
    # The scaled mapping separates them: 2(L−k)/L ≈ 2 vs 2(k−1)/k ≈ 1.33, and 0 on the mask.
    scaled_uniform = ica_loss(uniform, targets, mapping="scaled").item()
    assert scaled_uniform - ica_loss(pointing, targets, mapping="scaled").item() > 0.6


def test_raw_attention_gradient_vanishes_through_softmax():
    torch.manual_seed(0)
    num_cells = 196
    logits = torch.randn(64, num_cells, dtype=torch.float64)
    targets = torch.rand(64, num_cells) < 0.1
    grads = {}
    for mapping in ("identity", "scaled"):
        x = logits.clone().requires_grad_(True)
        ica_loss(torch.softmax(x, dim=-1), targets, mapping=mapping).backward()
        grads[mapping] = x.grad.abs().max().item()
    # d loss / d logits ~ α · weight ≤ (1/L)·O(1/k) for raw α; the scaled map multiplies by 2L.
    assert grads["identity"] < 1e-3
    assert grads["scaled"] > 50 * grads["identity"]


def test_layouts_and_valid_none_agree():
    rng = np.random.default_rng(1)
    alpha = torch.from_numpy(_softmax(rng.normal(size=(3, 5, 16))).astype(np.float32))
    targets = torch.from_numpy(rng.random((3, 5, 16)) < 0.3)
    valid = torch.from_numpy(rng.random((3, 5)) < 0.6)
    valid[0, 0] = True
    expected = _reference_ica(alpha.numpy(), targets.numpy(), valid.numpy(), "scaled")
    assert ica_loss(alpha, targets, valid, mapping="scaled").item() == pytest.approx(
        expected, rel=1e-6
    )
    # [N, L] layout on the gathered pairs, with and without an all-true validity mask.
    flat_a, flat_t = alpha[valid], targets[valid]
    assert ica_loss(flat_a, flat_t, mapping="scaled").item() == pytest.approx(expected, rel=1e-6)
    all_valid = torch.ones(flat_a.shape[0], dtype=torch.bool)
    assert ica_loss(flat_a, flat_t, all_valid, mapping="scaled").item() == pytest.approx(
        expected, rel=1e-6
    )
    # valid=None on [B, T, L] means every pair.
    every = _reference_ica(alpha.numpy(), targets.numpy(), np.ones((3, 5), bool), "scaled")
    assert ica_loss(alpha, targets, mapping="scaled").item() == pytest.approx(every, rel=1e-6)


@pytest.mark.parametrize("shape", [(0, 7), (2, 3, 7), (2, 4, 3, 7)])
def test_no_valid_pair_gives_zero_with_graph(shape):
    attention = torch.rand(shape, requires_grad=True)
    if len(shape) == 2:
        targets, valid = torch.ones(shape, dtype=torch.bool), None
    else:
        pair = (shape[0], shape[-2])
        targets = torch.ones((*pair, shape[-1]), dtype=torch.bool)
        if len(shape) == 3:
            targets = targets.reshape(shape)
        valid = torch.zeros(pair, dtype=torch.bool)
    loss = ica_loss(attention, targets, valid, mapping="scaled")
    assert loss.item() == 0.0 and loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    assert attention.grad is not None and torch.equal(attention.grad, torch.zeros(shape))


@pytest.mark.parametrize("heads", [None, 3])
def test_sum_and_none_reductions(heads):
    rng = np.random.default_rng(7)
    shape = (3, 4, 10) if heads is None else (3, heads, 4, 10)
    alpha = torch.from_numpy(_softmax(rng.normal(size=shape)).astype(np.float32))
    targets = torch.from_numpy(rng.random((3, 4, 10)) < 0.3)
    valid = torch.from_numpy(rng.random((3, 4)) < 0.5)
    valid[1, 2] = True
    kwargs = {} if heads is None else {"head_reduction": "per_head"}
    per_pair = ica_loss(alpha, targets, valid, reduction="none", **kwargs, mapping="scaled")
    assert per_pair.shape == (int(valid.sum()),)
    if heads is None:
        expected = [
            lovasz_hinge_pair(map_scores(alpha[b, t].tolist(), "scaled"), targets[b, t].tolist())
            for b, t in valid.nonzero().tolist()
        ]
    else:
        expected = [
            np.mean(
                [
                    lovasz_hinge_pair(map_scores(alpha[b, h, t].tolist(), "scaled"), targets[b, t])
                    for h in range(heads)
                ]
            )
            for b, t in valid.nonzero().tolist()
        ]
    np.testing.assert_allclose(per_pair.numpy(), expected, rtol=1e-5)
    total = ica_loss(alpha, targets, valid, reduction="sum", **kwargs, mapping="scaled")
    assert total.item() == pytest.approx(sum(expected), rel=1e-5)
    none_valid = torch.zeros_like(valid)
    assert ica_loss(alpha, targets, none_valid, reduction="none", mapping="scaled").shape == (0,)
    assert ica_loss(alpha, targets, none_valid, reduction="sum", mapping="scaled").item() == 0.0


def test_no_valid_pair_is_zero_even_for_non_finite_attention():
    attention = torch.full((2, 3, 5), float("inf"), requires_grad=True)
    loss = ica_loss(
        attention, torch.ones(2, 3, 5, dtype=torch.bool), torch.zeros(2, 3).bool(), mapping="scaled"
    )
    assert loss.item() == 0.0


@pytest.mark.parametrize("mapping", MAPPINGS)
def test_extreme_attention_is_finite(mapping):
    """Empty / full masks, uniform, one-hot and exactly-zero attention, ties: never NaN/inf."""
    num_cells = 196
    attention = torch.zeros(6, num_cells)
    attention[0] = 1.0 / num_cells  # uniform
    attention[1, 5] = 1.0  # one-hot
    attention[2, 5] = 1.0
    attention[3] = 1.0 / num_cells
    attention[4, :10] = 0.1  # ties inside and outside the mask
    attention[5, 100] = 1.0  # one-hot off the mask
    targets = torch.zeros(6, num_cells, dtype=torch.bool)
    targets[1] = True  # all foreground
    targets[3, :20] = True
    targets[4, 5:15] = True
    targets[5, :3] = True
    attention.requires_grad_(True)
    loss = ica_loss(attention, targets, mapping=mapping)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(attention.grad).all()
    expected = np.mean(
        [
            lovasz_hinge_pair(map_scores(a.tolist(), mapping), t.tolist())
            for a, t in zip(attention.detach(), targets)
        ]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_log_mapping_uses_additive_smoothing():
    alpha = torch.tensor([[0.0, 0.25, 0.75]], dtype=torch.float64)
    expected = torch.log(3 * alpha + 1e-6)
    torch.testing.assert_close(attention_to_scores(alpha, "log"), expected)
    assert torch.isfinite(attention_to_scores(alpha, "log")).all()
    # Gradient at exactly-zero weight is kept (no clamp there): d/dα log(Lα + ε) = L / ε.
    zero = torch.zeros(1, 4, dtype=torch.float64, requires_grad=True)
    attention_to_scores(zero, "log").sum().backward()
    torch.testing.assert_close(zero.grad, torch.full((1, 4), 4 / 1e-6, dtype=torch.float64))
    # Invalid negative weights still give finite scores.
    assert torch.isfinite(attention_to_scores(torch.tensor([[-0.5, 1.5]]), "log")).all()
    torch.testing.assert_close(attention_to_scores(alpha, "scaled"), 6 * alpha - 1)
    torch.testing.assert_close(attention_to_scores(alpha, "identity"), alpha)


def test_multi_head_reductions():
    rng = np.random.default_rng(2)
    b, h, t, num_cells = 2, 3, 4, 9
    alpha = _softmax(rng.normal(size=(b, h, t, num_cells)) * 2).astype(np.float32)
    targets = rng.random((b, t, num_cells)) < 0.4
    valid = rng.random((b, t)) < 0.7
    valid[0, 0] = True
    att = torch.from_numpy(alpha)

    def ref(reduce):
        losses = []
        for i in range(b):
            for j in range(t):
                if not valid[i, j]:
                    continue
                maps = alpha[i, :, j]  # [H, L]
                if reduce == "per_head":
                    per = [lovasz_hinge_pair(map_scores(m, "scaled"), targets[i, j]) for m in maps]
                    losses.append(np.mean(per))
                else:
                    m = maps.mean(0) if reduce == "mean" else maps.max(0)
                    losses.append(lovasz_hinge_pair(map_scores(m, "scaled"), targets[i, j]))
        return np.mean(losses)

    tg, vd = torch.from_numpy(targets), torch.from_numpy(valid)
    for reduce in ("mean", "max", "per_head"):
        got = ica_loss(att, tg, vd, head_reduction=reduce, mapping="scaled").item()
        assert got == pytest.approx(ref(reduce), rel=1e-5), reduce
        # 4-D targets repeated over heads give the same value.
        tg4 = tg.unsqueeze(1).expand(b, h, t, num_cells)
        assert ica_loss(
            att, tg4, vd, head_reduction=reduce, mapping="scaled"
        ).item() == pytest.approx(got, rel=1e-6)
    # A single head reduces to the 3-D loss.
    one = ica_loss(att[:, :1], tg, vd, mapping="scaled").item()
    assert one == pytest.approx(ica_loss(att[:, 0], tg, vd, mapping="scaled").item(), rel=1e-6)


def test_per_head_masks():
    rng = np.random.default_rng(4)
    alpha = _softmax(rng.normal(size=(1, 2, 2, 6))).astype(np.float32)
    targets = rng.random((1, 2, 2, 6)) < 0.5
    got = ica_loss(
        torch.from_numpy(alpha),
        torch.from_numpy(targets),
        head_reduction="per_head",
        mapping="scaled",
    )
    expected = np.mean(
        [
            np.mean(
                [
                    lovasz_hinge_pair(map_scores(alpha[0, h, j], "scaled"), targets[0, h, j])
                    for h in range(2)
                ]
            )
            for j in range(2)
        ]
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="differ across heads"):
        ica_loss(
            torch.from_numpy(alpha),
            torch.from_numpy(targets),
            head_reduction="mean",
            mapping="scaled",
        )


def test_bf16_under_autocast():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 196)
    features = torch.randn(4, 6, 32)
    targets = torch.rand(4, 6, 196) < 0.1
    valid = torch.rand(4, 6) < 0.7
    valid[0, 0] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(features)
        assert logits.dtype == torch.bfloat16
        alpha = torch.softmax(logits, dim=-1).to(torch.bfloat16)
        loss = ica_loss(alpha, targets, valid, mapping="scaled")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    # Same value as the float32 computation on the very same (bf16-rounded) weights.
    reference = _reference_ica(
        alpha.float().detach().numpy(), targets.numpy(), valid.numpy(), "scaled"
    )
    assert loss.item() == pytest.approx(reference, rel=1e-5)
    loss.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()
    assert layer.weight.grad.abs().sum() > 0


def test_gradcheck_float64_through_mapping():
    torch.manual_seed(5)
    num_cells = 10
    targets = torch.rand(3, 2, num_cells) < 0.4
    valid = torch.tensor([[True, False], [True, True], [False, True]])
    # Random positive weights (continuous, so hinge errors are tie-free and off the kink a.s.).
    attention = (torch.rand(3, 2, num_cells, dtype=torch.float64) * 0.2 + 0.01).requires_grad_()
    for mapping in MAPPINGS:
        assert torch.autograd.gradcheck(
            lambda a, m=mapping: ica_loss(a, targets, valid, mapping=m), (attention,), atol=1e-6
        )


def test_one_pair():
    alpha = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    targets = torch.tensor([[True, False, False, False]])
    # scores 3, 3, −1, −1 → errors −2, 4, 0, 0: ΔJ({1}) = 1/2 → loss 4 · 1/2 = 2.
    assert ica_loss(alpha, targets, mapping="scaled").item() == pytest.approx(2.0)


@pytest.mark.slow
def test_very_large_batch_is_fast_and_correct():
    torch.manual_seed(0)
    n, num_cells = 50_000, 196
    alpha = torch.softmax(torch.randn(n, num_cells) * 2, dim=-1).requires_grad_(True)
    targets = torch.rand(n, num_cells) < 0.1
    start = time.perf_counter()
    loss = ica_loss(alpha, targets, mapping="scaled")
    loss.backward()
    elapsed = time.perf_counter() - start
    assert torch.isfinite(loss) and torch.isfinite(alpha.grad).all()
    # Spot-check: the mean equals the reference on a few rows combined with the batched rows.
    rows = [0, 1234, n - 1]
    for r in rows:
        single = ica_loss(alpha[r : r + 1].detach(), targets[r : r + 1], mapping="scaled").item()
        ref = lovasz_hinge_pair(map_scores(alpha[r].tolist(), "scaled"), targets[r].tolist())
        assert single == pytest.approx(ref, rel=1e-5)
    print(f"ica_loss forward+backward on {n}x{num_cells}: {elapsed:.2f} s")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    alpha = torch.softmax(torch.randn(8, 5, 196), dim=-1)
    targets = torch.rand(8, 5, 196) < 0.1
    valid = torch.rand(8, 5) < 0.5
    cpu = ica_loss(alpha, targets, valid, mapping="scaled")
    gpu = ica_loss(alpha.cuda(), targets.cuda(), valid.cuda(), mapping="scaled")
    assert gpu.device.type == "cuda"
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mapping": "softmax"}, ValueError, "unknown mapping 'softmax'"),
        ({"head_reduction": "sum"}, ValueError, "unknown head_reduction 'sum'"),
        ({"valid": torch.ones(2, 4, dtype=torch.bool)}, ValueError, "valid shape"),
        ({"valid": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "bool tensor"),
        ({"targets": torch.ones(2, 3, 6, dtype=torch.bool)}, ValueError, "targets shape"),
        ({"targets": torch.full((2, 3, 5), 2.0)}, ValueError, "only 0 and 1"),
        ({"attention": torch.ones(2, 3, 5, dtype=torch.int64)}, TypeError, "floating"),
        ({"attention": torch.ones(1, 2, 2, 3, 5)}, ValueError, r"\[B, H, T, L\]"),
        ({"attention": torch.ones(2, 2, 4, 5)}, ValueError, "must be \\[B, T, L\\]"),
        ({"attention": torch.ones(2, 0, 3, 5)}, ValueError, "no heads"),
        ({"mapping": "log", "log_eps": 0.0}, ValueError, "log_eps"),
        ({"reduction": "avg"}, ValueError, "unknown reduction 'avg'"),
        ({"attention": torch.ones(2, 3, 0), "targets": torch.ones(2, 3, 0)}, ValueError, "L = 0"),
        ({"attention": torch.tensor(0.5)}, ValueError, r"\[N, L\]"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    args = {
        "attention": torch.full((2, 3, 5), 0.2),
        "targets": torch.zeros(2, 3, 5, dtype=torch.bool),
        "valid": None,
        "mapping": "scaled",
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        ica_loss(**args)
