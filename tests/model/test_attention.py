"""The decoder's attention against the paper's formula, on every code path, and its row grouping.

Reference: ``softmax_l(w·tanh(W_a a_l + U_a h))`` in float64, written directly from Xu et al.
(2015) with ``torch.tanh`` — independent of the sigmoid and exp-product forms the decoder uses.
"""

from __future__ import annotations

import pytest
import torch
from project_conf import section

from ica_captioning.model import cpu_attention
from ica_captioning.model.cpu_attention import EXP_RANGE
from ica_captioning.model.decoder import AttentionDecoder

V, D, H, A, L = 13, 12, 16, 8, 9


@pytest.fixture()
def dec():
    torch.manual_seed(0)
    conf = section("train")["decoder"]
    sizes = {"embed_dim": 6, "hidden_dim": H, "attention_dim": A, "dropout": 0.0}
    return AttentionDecoder(vocab_size=V, feature_dim=D, **{**conf, **sizes}).eval()


def reference_alpha(dec, features, h, k):
    """``[N·K, L]`` attention of rows ``h [N·K, H]``; row ``r`` looks at image ``r // k``."""
    f = features.double().repeat_interleave(k, dim=0)  # [R, L, D]
    w_a, b_a = dec.att_features.weight.double(), dec.att_features.bias.double()
    u_a, b_u = dec.att_hidden.weight.double(), dec.att_hidden.bias.double()
    w = dec.att_score.weight.double()[0]  # [A]
    pre = f @ w_a.T + b_a + (h.double() @ u_a.T + b_u).unsqueeze(1)  # [R, L, A]
    return torch.softmax(torch.tanh(pre) @ w, dim=-1)


def rows_for(n, k, scale=1.0):
    g = torch.Generator().manual_seed(n * 10 + k)
    features = scale * torch.randn(n, L, D, generator=g)
    h = torch.randn(n * k, H, generator=g)
    return features, h


@pytest.mark.parametrize("k", [1, 3])
def test_all_paths_equal_the_tanh_formula(dec, k):
    features, h = rows_for(4, k)
    expected = reference_alpha(dec, features, h, k)
    with torch.no_grad():  # training formula (sigmoid), no tiling
        projected = dec.att_features(features)
        _, alpha_grad_path = dec.attend(features, projected, projected.new_empty(4, 0, 0), h)
    with torch.inference_mode():  # CPU inference: exp-product fast path
        state = dec.init_state(features)
        assert state[3].shape == (4, L, A)  # fast path on
        _, alpha_fast = dec.attend(features, state[2], state[3], h)
        _, alpha_sigmoid = dec.attend(features, state[2], state[2].new_empty(4, 0, 0), h)
    for alpha in (alpha_grad_path, alpha_fast, alpha_sigmoid):
        assert alpha.shape == (4 * k, L)
        torch.testing.assert_close(alpha.double(), expected, rtol=0, atol=2e-6)


def test_tiles_cover_every_image(dec, monkeypatch):
    # One image per tile, with a remainder tile: every row must still be scored.
    monkeypatch.setattr(cpu_attention, "TILE_BYTES", 1)
    features, h = rows_for(5, 2)
    with torch.inference_mode():
        state = dec.init_state(features)
        _, alpha = dec.attend(features, state[2], state[3], h)
    torch.testing.assert_close(
        alpha.double(), reference_alpha(dec, features, h, 2), atol=2e-6, rtol=0
    )


def test_out_of_range_values_fall_back_to_sigmoid(dec):
    # |W_a a| beyond EXP_RANGE: exp(-2 W_a a) could overflow, so the fast path must switch off
    # and the result must still be the exact attention (no inf/NaN).
    features, h = rows_for(3, 2, scale=200.0)
    with torch.inference_mode():
        state = dec.init_state(features)
        assert state[2].abs().max() > EXP_RANGE
        assert state[3].shape == (3, 0, 0)
        _, alpha = dec.attend(features, state[2], state[3], h)
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(
        alpha.double(), reference_alpha(dec, features, h, 2), atol=2e-6, rtol=0
    )
    # |U_a h| beyond EXP_RANGE with in-range annotations: the per-step check switches off.
    features, h = rows_for(3, 2)
    h = 1e4 * h
    with torch.inference_mode():
        state = dec.init_state(features)
        assert state[3].shape == (3, L, A)
        _, alpha = dec.attend(features, state[2], state[3], h)
    assert torch.isfinite(alpha).all()
    torch.testing.assert_close(
        alpha.double(), reference_alpha(dec, features, h, 2), atol=2e-6, rtol=0
    )


def test_training_gradients_equal_the_tanh_formula(dec):
    features, h = rows_for(2, 1)
    h = h.requires_grad_()
    target = torch.randn(2, L, generator=torch.Generator().manual_seed(3)).softmax(-1)
    projected = dec.att_features(features)
    _, alpha = dec.attend(features, projected, projected.new_empty(2, 0, 0), h)
    (alpha * target).sum().backward()
    grads = [p.grad.clone() for p in (h, dec.att_hidden.weight, dec.att_score.weight)]
    for p in (h, dec.att_hidden.weight, dec.att_score.weight):
        p.grad = None
    (reference_alpha(dec, features, h, 1) * target.double()).sum().backward()
    for got, p in zip(grads, (h, dec.att_hidden.weight, dec.att_score.weight)):
        torch.testing.assert_close(got.double(), p.grad.double(), atol=1e-6, rtol=1e-5)


def test_grouped_rows_equal_repeated_features(dec):
    """K rows per image with features once == one feature copy per row (K = 1)."""
    features, _ = rows_for(3, 1)
    k = 4
    tokens = torch.randint(4, V, (3 * k,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        h, c, p, e = dec.init_state(features)
        grouped_state = (h.repeat_interleave(k, 0), c.repeat_interleave(k, 0), p, e)
        lg, ag, sg = dec.step(features, tokens, grouped_state)
        rep = features.repeat_interleave(k, 0)
        h2, c2, p2, e2 = dec.init_state(rep)
        lr, ar, sr = dec.step(rep, tokens, (h2, c2, p2, e2))
    torch.testing.assert_close(lg, lr)
    torch.testing.assert_close(ag, ar)
    torch.testing.assert_close(sg[0], sr[0])
    assert sg[2] is p and sg[3] is e  # per-image slots are handed back untouched


def test_step_rejects_mismatched_rows(dec):
    features, _ = rows_for(3, 1)
    with torch.inference_mode():
        state = dec.init_state(features)
        with pytest.raises(ValueError, match="N·K rows"):
            dec.step(features, torch.ones(4, dtype=torch.long), state)  # 4 rows, 3 images
        h, c, p, e = state
        with pytest.raises(ValueError, match="N·K rows"):
            dec.step(features, torch.ones(6, dtype=torch.long), (h, c, p, e))  # h has 3 rows


def _compiled_or_skip():
    if cpu_attention.compiled_scores() is None:
        pytest.skip("torch.compile cannot build the CPU kernel here (no C++ compiler?)")


@pytest.mark.slow
@pytest.mark.parametrize(("n", "k"), [(4, 3), (1, 1), (5, 2)])
def test_compiled_kernel_equals_the_tanh_formula(dec, n, k):
    _compiled_or_skip()
    features, h = rows_for(n, k)
    with torch.inference_mode(), cpu_attention.use_kernel("compiled"):
        state = dec.init_state(features)
        _, alpha = dec.attend(features, state[2], state[3], h)
    assert alpha.shape == (n * k, L)
    torch.testing.assert_close(
        alpha.double(), reference_alpha(dec, features, h, k), atol=2e-6, rtol=0
    )


@pytest.mark.slow
def test_compiled_kernel_beam_search_keeps_the_captions(dec):
    from ica_captioning.decoding import beam_search_features

    _compiled_or_skip()
    with torch.no_grad():
        dec.out.weight.mul_(4.0)  # peaked word distributions: captions of different lengths
    features, _ = rows_for(6, 1)
    kw = dict(beam_size=3, max_len=6, start_id=1, end_id=2, pad_id=0, banned_ids=(0, 1, 3))
    tiled = beam_search_features(dec, features, **kw)
    with cpu_attention.use_kernel("compiled"):
        compiled = beam_search_features(dec, features, **kw)
    assert compiled.token_lists() == tiled.token_lists()
    torch.testing.assert_close(compiled.scores, tiled.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled.alphas, tiled.alphas, atol=1e-6, rtol=0)


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="unknown CPU attention kernel 'fused'.*tiled"):
        with cpu_attention.use_kernel("fused"):
            pass


def test_kernel_that_cannot_be_built_falls_back_to_tiled(dec, monkeypatch, caplog):
    def broken(*args, **kwargs):
        def fn(*a):
            raise RuntimeError("Compiler: cc not found")

        return fn

    cpu_attention.compiled_scores.cache_clear()
    monkeypatch.setattr(torch, "compile", broken)
    features, h = rows_for(3, 2)
    try:
        with torch.inference_mode(), cpu_attention.use_kernel("compiled"):
            state = dec.init_state(features)
            _, alpha = dec.attend(features, state[2], state[3], h)
            assert cpu_attention.compiled_scores() is None
    finally:
        cpu_attention.compiled_scores.cache_clear()  # the real kernel for later tests
    assert "compiled kernel is not available here (RuntimeError: Compiler: cc not found)" in (
        caplog.text
    )
    torch.testing.assert_close(
        alpha.double(), reference_alpha(dec, features, h, 2), atol=2e-6, rtol=0
    )
