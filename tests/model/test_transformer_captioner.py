"""The Transformer as a captioner: building, bundles, the training loss and a tiny training run."""

from __future__ import annotations

import math

import pytest
import torch
from project_conf import model_params
from tiny_data import make_tiny_dataset, tiny_config, train_tiny

from ica_captioning.decoding.teacher_forcing import teacher_forced_alphas, teacher_forced_heads
from ica_captioning.losses.ica import ica_loss
from ica_captioning.losses.training import loss_terms
from ica_captioning.model import AttentionDecoder, build_captioner, load_captioner, make_bundle
from ica_captioning.model.protocol import sequence_attention
from ica_captioning.model.transformer import TransformerDecoder, select_attention
from ica_captioning.tokens import END_ID, PAD_ID, START_ID
from ica_captioning.training.loop import noam_factor, step_lr_factor, warmup_factor

V, G = 11, 4
L = G * G
TRANSFORMER = {"d_model": 16, "num_layers": 2, "num_heads": 4, "d_ff": 32, "dropout": 0.0,
               "encoder_layers": 1, "max_len": 8}  # fmt: skip


def _config(**transformer):
    return model_params(
        encoder={"backbone": "resnet18", "layer": "layer1", "grid_size": G, "image_size": 32},
        architecture="transformer",
        transformer={**TRANSFORMER, **transformer},
    )


def _model(seed=0, **transformer):
    torch.manual_seed(seed)
    return build_captioner(_config(**transformer), V).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(b=3, t=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, 32, 32, generator=gen)
    ids = torch.randint(4, V, (b, t + 1), generator=gen)
    ids[:, 0] = START_ID
    return images, ids


@pytest.mark.parametrize(
    ("layers", "heads", "maps"),
    [("last", "all", [(1, 0), (1, 1), (1, 2), (1, 3)]), ("all", [2], [(0, 2), (1, 2)]),
     ([0], [3, 1], [(0, 3), (0, 1)])],
)  # fmt: skip
def test_build_forward_and_step_return_the_supervised_selection(layers, heads, maps):
    model = _model(ica_layers=layers, ica_heads=heads)
    dec = model.decoder
    assert isinstance(dec, TransformerDecoder) and dec.attention_maps == maps
    assert dec.feature_dim == model.encoder.out_dim and dec.grid_size == G
    images, ids = _inputs()
    with torch.no_grad():
        feats = model.encode(images)
        logits, attn = model(features=feats, inputs=ids)  # [B, T, H', L]
        assert logits.shape == (3, 6, V) and attn.shape == (3, 6, len(maps), L)
        _, full = dec(feats, ids)  # [B, Λ, H, T, L]
        for i, (la, h) in enumerate(maps):
            torch.testing.assert_close(attn[:, :, i], full[:, la, h])
        # step returns the same maps (what beam search, greedy and the figures read) ...
        heads_tf = teacher_forced_heads(dec, feats, ids)  # [B, T, H', L]
        torch.testing.assert_close(heads_tf, attn[:, :5], atol=1e-5, rtol=0)
        # ... and evaluation scores their mean.
        forced = teacher_forced_alphas(dec, feats, torch.cat([ids, ids[:, :1] * 0 + END_ID], 1))
        torch.testing.assert_close(forced[:, :6], sequence_attention(attn), atol=1e-5, rtol=0)


def test_bundle_round_trip_and_legacy_sat_bundles():
    model = _model(ica_layers=[0], ica_heads=[1, 2], attention_init_scale=3.0)
    vocab = {"itos": [f"w{i}" for i in range(V)]}
    bundle = make_bundle(model, model.config, vocab)
    assert bundle["config"]["architecture"] == "transformer"
    loaded = load_captioner(bundle)
    assert isinstance(loaded.decoder, TransformerDecoder)
    assert loaded.decoder.attention_maps == [(0, 1), (0, 2)]
    assert loaded.vocabulary == vocab
    images, ids = _inputs()
    with torch.no_grad():
        for a, b in zip(model(images=images, inputs=ids), loaded(images=images, inputs=ids)):
            torch.testing.assert_close(a, b)
    # A bundle from before train.architecture existed is a Show-Attend-Tell model.
    sat = build_captioner(model_params(encoder={"grid_size": G, "image_size": 32}), V)
    old = make_bundle(sat, model_params(encoder={"grid_size": G, "image_size": 32}), vocab)
    for key in ("architecture", "transformer"):
        old["config"].pop(key)
    assert isinstance(load_captioner(old).decoder, AttentionDecoder)


def test_attention_init_scale_scales_the_initial_cross_attention_logits():
    flat, sharp = _model(seed=0, attention_init_scale=1.0), _model(seed=0, attention_init_scale=8.0)
    for a, b in zip(flat.decoder.layers, sharp.decoder.layers):
        torch.testing.assert_close(b.cross_attn.q.weight, 8.0 * a.cross_attn.q.weight)
    images, ids = _inputs()
    with torch.no_grad():
        spread = [m(images=images, inputs=ids)[1].amax(-1).mean() for m in (flat, sharp)]
    assert spread[1] > 2 * spread[0]  # sharper maps at initialisation


def _grad(p):
    return p.grad if p.grad is not None else torch.zeros_like(p)


def test_ica_term_of_the_training_loss_reaches_only_the_chosen_layer_and_head():
    model = _model(ica_layers=[0], ica_heads=[1], tie_embeddings=False)
    model.train()
    images, ids = _inputs(b=4, t=6, seed=1)
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    targets[0, 4:] = PAD_ID  # a padded caption
    masks = torch.rand(4, 6, L, generator=torch.Generator().manual_seed(2)) > 0.6
    masks[..., 0] = True
    valid = torch.zeros(4, 6, dtype=torch.bool)
    valid[:, 2] = valid[1, 4] = valid[0, 5] = True  # (0, 5) is padding: not counted
    logits, attn = model(images=images, inputs=inputs)  # [B, T, 1, L]
    terms = loss_terms(logits, attn, targets, masks, valid, True, "log", "per_head")
    assert terms.n_pairs == 5
    # The ICA term is ica_loss of the selected maps in its [B, H', T, L] layout.
    _, full = model.decoder(model.encode(images), inputs)
    expected = ica_loss(select_attention(full, [0], [1]), masks, valid & (targets != PAD_ID),
                        mapping="log", head_reduction="per_head", reduction="sum")  # fmt: skip
    torch.testing.assert_close(terms.ica_sum, expected)
    # The doubly-stochastic term is computed on the head mean.
    mean = sequence_attention(attn).detach()
    total = (mean * (targets != PAD_ID).unsqueeze(-1)).sum(1)
    torch.testing.assert_close(terms.dsr_sum, ((1 - total) ** 2).sum())
    model.zero_grad(set_to_none=True)
    terms.ica_sum.backward()
    dec = model.decoder
    chosen, later = dec.layers[0], dec.layers[1]
    for name, p in [*later.named_parameters(), *dec.out.named_parameters(),
                    *dec.final_norm.named_parameters(), *chosen.ff.named_parameters(),
                    *chosen.cross_attn.out.named_parameters()]:  # fmt: skip
        assert (_grad(p) == 0).all(), name
    d_head = dec.d_head
    q = _grad(chosen.cross_attn.q.weight)
    for h in range(dec.num_heads):
        rows = q[h * d_head : (h + 1) * d_head]
        assert (rows != 0).any() if h == 1 else (rows == 0).all(), h
    assert (_grad(dec.feature_proj.weight) != 0).any()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _tiny_transformer(tmp_path, **transformer):
    return tiny_config(
        tmp_path, architecture="transformer", alpha_c=0.0,
        transformer={**TRANSFORMER, "dropout": 0.1, "warmup_steps": 3, "ica_heads": [0, 1],
                     "head_reduction": "max", **transformer},
    )  # fmt: skip


def test_warmup_factor():
    assert [warmup_factor(4, s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_noam_factor_is_vaswani_rate_over_its_peak():
    d_model, warmup = 512, 20000
    lr = d_model**-0.5 * warmup**-0.5
    for step in (0, 1, 99, 19998, 19999, 20000, 123456):
        s = step + 1
        vaswani = d_model**-0.5 * min(s**-0.5, s * warmup**-1.5)
        assert lr * noam_factor(warmup, step) == pytest.approx(vaswani, rel=1e-12)
    assert noam_factor(4, 3) == 1.0 and noam_factor(4, 15) == 0.5  # peak at w, then 1/sqrt(s)
    assert step_lr_factor("noam", 4, 15) == 0.5
    assert step_lr_factor("step", 4, 15) == 1.0 and step_lr_factor("step", 4, 1) == 0.5
    with pytest.raises(ValueError, match="warmup_steps > 0"):
        noam_factor(0, 3)


@pytest.mark.slow
def test_tiny_training_run_of_the_transformer(data, tmp_path):
    cfg = _tiny_transformer(tmp_path)
    bundle, history = train_tiny(cfg, data)
    assert len(history) == 2 and history["train_ica"].gt(0).all()
    assert history["val_attention_mass"].between(0, 1).all()
    # 8 training images x 2 captions / batch 4 = 4 steps per epoch: epoch 1 ends at step 4 of
    # the 3-step warm-up (full rate), the schedule halves it after epoch 1.
    assert history["lr"].tolist() == pytest.approx([0.01, 0.005])
    model = load_captioner(bundle)
    assert isinstance(model.decoder, TransformerDecoder)
    assert model.decoder.attention_maps == [(1, 0), (1, 1)]
    assert bundle["config"]["transformer"]["head_reduction"] == "max"
    # A Transformer too short for the captions stops before any training work.
    with pytest.raises(ValueError, match=r"train\.transformer\.max_len=4"):
        train_tiny(_tiny_transformer(tmp_path, max_len=4), data)
    assert not math.isnan(history["val_ica"].iloc[-1])


@pytest.mark.slow
def test_noam_schedule_sets_each_steps_rate_and_needs_a_warmup(data, tmp_path):
    cfg = tiny_config(tmp_path, architecture="transformer", alpha_c=0.0,
                      lr_schedule={"type": "noam"},
                      transformer={**TRANSFORMER, "warmup_steps": 3})  # fmt: skip
    _, history = train_tiny(cfg, data)
    # 4 optimiser steps per epoch: the last steps are 3 and 7; no per-epoch halving.
    assert history["lr"].tolist() == pytest.approx(
        [0.01 * noam_factor(3, 3), 0.01 * noam_factor(3, 7)]
    )
    with pytest.raises(ValueError, match="noam.*warmup_steps"):
        tiny_config(tmp_path, lr_schedule={"type": "noam"})  # Show-Attend-Tell: no warm-up
