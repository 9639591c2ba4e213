"""Batch assembly (pseudo-label alignment), grid-size check, loss composition, feature cache."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from project_conf import model_params

from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model import build_captioner, preprocess_images
from ica_captioning.model.features import build_feature_cache, cache_key
from ica_captioning.params.train import EncoderParams
from ica_captioning.training.batches import build_caption_set, check_grid_size, epoch_batches


def _tables():
    enc = pd.DataFrame(
        {
            "caption_id": [10, 11, 12],
            "image_id": [1, 1, 2],
            "split": ["train"] * 3,
            "ids": [[1, 4, 5, 2], [1, 6, 7, 8, 9, 2], [1, 4, 2]],
            "length": [4, 6, 3],
        }
    )
    g1 = np.zeros((2, 2), bool)
    g1[0, 1] = True
    g2 = np.zeros((2, 2), bool)
    g2[1, :] = True
    pack = lambda g: np.packbits(g.reshape(-1)).tobytes()  # noqa: E731
    pl = pd.DataFrame(
        {
            "caption_id": [11, 11, 10, 11, 12],
            "image_id": [1, 1, 1, 1, 2],
            "token_position": [3, 0, 1, 3, 5],  # (12, 5) lies past the caption: unusable
            "class_name": ["a", "b", "a", "c", "a"],
            "grid_size": [2] * 5,
            "grid": [pack(g1), pack(g2), pack(g2), pack(g2), pack(g1)],
        }
    )
    return enc, pl, g1, g2


def test_batch_aligns_labels_with_decoder_steps(caplog):
    enc, pl, g1, g2 = _tables()
    with caplog.at_level("WARNING"):
        cs = build_caption_set(enc, pl, "train", {1: 0, 2: 1}, grid_size=2)
    assert "1 of 5 train pseudo-labels point past" in caplog.text
    assert cs.num_labels == 4
    batch = cs.batch(np.array([1, 0, 2]))  # captions 11, 10, 12
    assert batch["inputs"].tolist() == [[1, 6, 7, 8, 9], [1, 4, 5, 2, 0], [1, 4, 2, 0, 0]]
    assert batch["targets"].tolist() == [[6, 7, 8, 9, 2], [4, 5, 2, 0, 0], [4, 2, 0, 0, 0]]
    valid = batch["ica_valid"].numpy()
    assert valid.tolist() == [
        [True, False, False, True, False],
        [False, True, False, False, False],
        [False] * 5,
    ]
    tg = batch["ica_targets"].numpy()
    # Step 3 of caption 11: two classes named by one token -> union of their masks.
    np.testing.assert_array_equal(tg[0, 3], (g1 | g2).reshape(-1))
    np.testing.assert_array_equal(tg[0, 0], g2.reshape(-1))
    np.testing.assert_array_equal(tg[1, 1], g2.reshape(-1))
    assert not tg[2].any()
    # Target at a labelled step is the labelled word: ids[t + 1] == w_t.
    assert int(batch["targets"][0, 3]) == 9 and int(batch["targets"][1, 1]) == 5
    assert batch["image_inv"].tolist() == [0, 0, 1]
    assert batch["images"].tolist() == [0, 1]


def test_grid_size_mismatch_is_a_clear_error():
    enc, pl, _, _ = _tables()
    with pytest.raises(ValueError, match="grid_size \\[2\\].*pools to 14"):
        check_grid_size(pl, 14)
    bad = pl.copy()
    bad["grid"] = [b"\x00\x00"] * len(bad)
    with pytest.raises(ValueError, match="2 grid bytes, expected 1"):
        build_caption_set(enc, bad, "train", {1: 0, 2: 1}, grid_size=2)
    with pytest.raises(ValueError, match="missing from the `images`"):
        build_caption_set(enc, pl, "train", {1: 0}, grid_size=2)


def _reference_ica(alphas, targets, valid):
    """Per-pair Lovász hinge of 2·L·α − 1 (Berman et al., written out with a loop)."""
    losses = []
    big_l = alphas.shape[-1]
    for b, t in zip(*torch.nonzero(valid, as_tuple=True)):
        scores = 2 * big_l * alphas[b, t].double() - 1
        labels = targets[b, t].double()
        signs = 2 * labels - 1
        errors = 1 - scores * signs
        order = torch.argsort(errors, descending=True)
        gt = labels[order]
        gts = gt.sum()
        inter = gts - gt.cumsum(0)
        union = gts + (1 - gt).cumsum(0)
        jac = 1 - inter / union
        jac[1:] = jac[1:] - jac[:-1]
        losses.append((torch.relu(errors[order]) * jac).sum())
    return torch.stack(losses).mean()


def test_loss_composition_lambda_zero_is_exactly_baseline():
    torch.manual_seed(0)
    b, t, v, cells = 3, 5, 7, 9
    logits = torch.randn(b, t, v)
    alphas = torch.softmax(torch.randn(b, t, cells), -1)
    targets = torch.randint(1, v, (b, t))
    targets[2, 3:] = 0
    ica_t = torch.rand(b, t, cells) > 0.6
    ica_v = torch.zeros(b, t, dtype=torch.bool)
    ica_v[0, 1] = ica_v[1, 4] = ica_v[2, 0] = True
    ica_v[2, 4] = True  # padded step: must be ignored
    base_terms = loss_terms(logits, alphas, targets, None, None, False, "scaled")
    base, parts = combine(base_terms, alpha_c=1.5, lambda_aux=0.0)
    # Independent reference for CE + α_c·DSR.
    mask = targets != 0
    ce_ref = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    dsr_ref = ((1 - (alphas * mask[..., None]).sum(1)) ** 2).mean()
    torch.testing.assert_close(base, ce_ref + 1.5 * dsr_ref)
    # λ = 0 with the ICA term computed: bit-identical total.
    with_ica = loss_terms(logits, alphas, targets, ica_t, ica_v, True, "scaled")
    zero, parts0 = combine(with_ica, alpha_c=1.5, lambda_aux=0.0)
    assert torch.equal(zero, base)
    assert with_ica.n_pairs == 3
    ica_ref = _reference_ica(alphas, ica_t, ica_v & mask)
    torch.testing.assert_close(parts0["ica"].double(), ica_ref, rtol=1e-5, atol=1e-6)
    full, _ = combine(with_ica, alpha_c=1.5, lambda_aux=0.1)
    torch.testing.assert_close(full.double(), base.double() + 0.1 * ica_ref, rtol=1e-5, atol=1e-6)
    # The ICA gradient reaches the attention maps.
    alphas.requires_grad_(True)
    t2 = loss_terms(logits, alphas, targets, ica_t, ica_v, True, "scaled")
    combine(t2, 1.0, 0.1)[0].backward()
    assert alphas.grad is not None and alphas.grad[0, 1].abs().sum() > 0


def test_feature_cache_reuse_and_invalidation(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
    params = model_params(encoder={"layer": "layer1", "grid_size": 2, "image_size": 32})
    enc_cfg = params.encoder
    model = build_captioner(params, 5)
    kw = {"dtype": "float32", "batch_size": 64, "device": "cpu"}
    calls = []
    orig = model.encoder.forward
    model.encoder.forward = lambda x: (calls.append(len(x)), orig(x))[1]
    paths = ["0.png", "1.png", "2.png"]
    src = build_feature_cache(
        model.encoder, enc_cfg, [0, 1, 2], paths, tmp_path, tmp_path / "c", **kw
    )
    assert calls == [3]
    feats = src(torch.tensor([0, 2]))
    with torch.no_grad():
        ref = orig(preprocess_images(["0.png", "2.png"], 32, root=tmp_path))
    torch.testing.assert_close(feats, ref)
    # Same settings and images: read back, no encoding.
    src2 = build_feature_cache(
        model.encoder, enc_cfg, [0, 1, 2], paths, tmp_path, tmp_path / "c", **kw
    )
    assert calls == [3] and src2.path == src.path
    # Changed encoder settings or image list: new key, re-encoded.
    key = cache_key(enc_cfg, [0, 1, 2], paths, tmp_path, "float32")
    changed = lambda **kv: EncoderParams.parse({**enc_cfg.to_dict(), **kv}, "e")  # noqa: E731
    for cfg, ids, ps in (
        (changed(layer="layer2"), [0, 1, 2], paths),
        (changed(grid_size=3), [0, 1, 2], paths),
        (changed(init_seed=1), [0, 1, 2], paths),
        (enc_cfg, [0, 1], paths[:2]),
        (enc_cfg, [0, 1, 5], paths),
    ):
        assert cache_key(cfg, ids, ps, tmp_path, "float32") != key
    build_feature_cache(model.encoder, enc_cfg, [0, 1], paths[:2], tmp_path, tmp_path / "c", **kw)
    assert calls == [3, 2]
    assert len(list((tmp_path / "c").glob("features-*.npy"))) == 2
    assert not list((tmp_path / "c").glob("*.tmp*"))
    # A different local weights file (size/mtime) also changes the key.
    wfile = tmp_path / "w.pth"
    torch.save({}, wfile)
    k1 = cache_key(changed(weights=str(wfile)), [0], ["0.png"], tmp_path, "float32")
    torch.save({"x": torch.zeros(3)}, wfile)
    k2 = cache_key(changed(weights=str(wfile)), [0], ["0.png"], tmp_path, "float32")
    assert k1 != k2


def test_epoch_batches_cover_every_caption_once_and_bucket_by_length():
    lengths = np.random.default_rng(1).integers(3, 30, size=203)
    plain = epoch_batches(lengths, 8, 1, 0, seed=0, epoch=1, bucket_batches=0)
    bucketed = epoch_batches(lengths, 8, 1, 0, seed=0, epoch=1, bucket_batches=5)
    for batches in (plain, bucketed):
        assert sorted(np.concatenate(batches).tolist()) == list(range(203))
    spread = lambda bs: np.mean([np.ptp(lengths[b]) for b in bs])  # noqa: E731
    assert spread(bucketed) < 0.5 * spread(plain)
    # Same seed and epoch → same batches; another epoch → another order.
    again = epoch_batches(lengths, 8, 1, 0, seed=0, epoch=1, bucket_batches=5)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))
    other = epoch_batches(lengths, 8, 1, 0, seed=0, epoch=2, bucket_batches=5)
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other))
    # Two ranks split every global batch of the one-process schedule with batch 16.
    r0 = epoch_batches(lengths, 8, 2, 0, seed=0, epoch=1, bucket_batches=5)
    r1 = epoch_batches(lengths, 8, 2, 1, seed=0, epoch=1, bucket_batches=5)
    single = epoch_batches(lengths, 16, 1, 0, seed=0, epoch=1, bucket_batches=5)
    for a, b, s in zip(r0, r1, single):
        assert np.array_equal(np.concatenate([a, b]), s)
