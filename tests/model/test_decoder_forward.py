"""Show-Attend-Tell teacher forcing skips the steps that only predict padding, exactly."""

from __future__ import annotations

import pytest
import torch

from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model.decoder import AttentionDecoder
from ica_captioning.tokens import END_ID, PAD_ID, START_ID

V, D, L = 23, 12, 9


def _decoder(seed: int = 0, dropout: float = 0.0) -> AttentionDecoder:
    torch.manual_seed(seed)
    return AttentionDecoder(
        vocab_size=V, feature_dim=D, embed_dim=8, hidden_dim=16, attention_dim=10,
        dropout=dropout, attention_init_scale=10.0,
    )  # fmt: skip


def _batch(lengths: list[int], seed: int = 0):
    """Captions of ``lengths`` words as ``[<start>, w…, <end>, <pad>…]`` and random features."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths) + 2
    ids = torch.full((len(lengths), width), PAD_ID)
    for i, n in enumerate(lengths):
        ids[i, 0] = START_ID
        ids[i, 1 : n + 1] = torch.randint(4, V, (n,), generator=gen)
        ids[i, n + 1] = END_ID
    return torch.randn(len(lengths), L, D, generator=gen), ids


def _every_row(decoder, features, inputs):
    """The plain loop: every step on every row (what forward computed before)."""
    state = decoder.init_state(features)
    logits, alphas = [], []
    for t in range(inputs.shape[1]):
        step_logits, alpha, state = decoder.step(features, inputs[:, t], state)
        logits.append(step_logits)
        alphas.append(alpha)
    return torch.stack(logits, 1), torch.stack(alphas, 1)


@pytest.mark.parametrize("lengths", [[3, 7, 1, 7, 4], [5], [2, 2, 2], [0, 6, 3]])
def test_valid_steps_equal_the_every_row_loop_and_skipped_steps_are_zero(lengths):
    decoder = _decoder().eval()
    features, ids = _batch(lengths)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        logits, alphas = decoder(features, inputs)
        ref_logits, ref_alphas = _every_row(decoder, features, inputs)
    valid = targets != PAD_ID  # [B, T]: the steps some loss reads
    assert logits.shape == ref_logits.shape and alphas.shape == ref_alphas.shape
    torch.testing.assert_close(logits[valid], ref_logits[valid], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alphas[valid], ref_alphas[valid], rtol=1e-5, atol=1e-6)
    assert (logits[~valid] == 0).all() and (alphas[~valid] == 0).all()
    if (~valid).any():  # the reference really computed something there
        assert (ref_logits[~valid] != 0).any()


def test_loss_and_gradients_equal_the_every_row_loop():
    lengths = [6, 2, 9, 4, 4, 1]
    features, ids = _batch(lengths, seed=3)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    gen = torch.Generator().manual_seed(1)
    ica_targets = torch.rand(len(lengths), inputs.shape[1], L, generator=gen) < 0.3
    ica_valid = (targets != PAD_ID) & (targets != END_ID)
    grads = []
    for forward in ("skip", "every_row"):
        decoder = _decoder(seed=5).train()
        feats = features.clone().requires_grad_(True)
        if forward == "skip":
            logits, alphas = decoder(feats, inputs)
        else:
            logits, alphas = _every_row(decoder, feats, inputs)
        terms = loss_terms(logits, alphas, targets, ica_targets, ica_valid, True, "log")
        loss, _ = combine(terms, 1.0, 0.1)
        loss.backward()
        grads.append(
            (
                float(loss.detach()),
                feats.grad.clone(),
                {n: p.grad.clone() for n, p in decoder.named_parameters()},
            )
        )
    (loss_a, feat_a, par_a), (loss_b, feat_b, par_b) = grads
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    torch.testing.assert_close(feat_a, feat_b, rtol=1e-5, atol=1e-7)
    for name in par_b:
        torch.testing.assert_close(par_a[name], par_b[name], rtol=1e-5, atol=1e-7, msg=name)


def test_rows_without_padding_compute_every_step():
    decoder = _decoder().eval()
    features, ids = _batch([4, 4, 4])
    inputs = ids[:, :-2]  # no <end> among the inputs: every row needs every step
    with torch.no_grad():
        got = decoder(features, inputs)
        ref = _every_row(decoder, features, inputs)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-6)
    assert (got[0] != 0).all(dim=-1).all()  # no step skipped


def test_output_layer_runs_once_over_all_steps(monkeypatch):
    # The deep output and L_o do not feed back: teacher forcing applies them in one call.
    decoder = _decoder().eval()
    features, ids = _batch([3, 7, 1, 5])
    calls = []
    monkeypatch.setattr(decoder.out, "forward", lambda x: calls.append(x.shape) or x[..., :V] * 0)
    with torch.no_grad():
        decoder(features, ids[:, :-1])
    rows = sum(n + 1 for n in [3, 7, 1, 5])  # <start> and every word predict a token
    assert calls == [torch.Size([rows, 8])]


def test_prefixes_views_and_gradient_equal_plain_slices():
    from ica_captioning.model.decoder import prefixes

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 3, 4, generator=gen)
    sizes = [6, 6, 4, 4, 1]
    weights = [torch.randn(n, 3, 4, generator=gen) for n in sizes]
    grads = []
    for slicer in (prefixes, lambda x, s: [x[:n] for n in s]):
        x = base.clone().requires_grad_(True)
        parts = slicer(x, sizes)
        assert [p.shape[0] for p in parts] == sizes
        assert all(torch.equal(p, base[:n]) for p, n in zip(parts, sizes))
        # One slice unused: its gradient is None in the custom backward.
        sum((p * w).sum() for p, w in zip(parts[:-1], weights[:-1])).backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)
    assert (grads[0][1:] != 0).any() and prefixes(base, [2])[0].shape == (2, 3, 4)


@pytest.mark.parametrize(("rows", "steps"), [(0, 4), (3, 0)])
def test_empty_batches_give_empty_outputs(rows, steps):
    decoder = _decoder().train()
    features = torch.randn(rows, L, D)
    logits, alphas = decoder(features, torch.full((rows, steps), START_ID))
    assert logits.shape == (rows, steps, V) and alphas.shape == (rows, steps, L)
