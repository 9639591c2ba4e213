"""Training loop: resume equality, NaN handling, DDP equality, fine-tuning path, history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_data import make_tiny_dataset, tiny_config

from ica_captioning.model import build_captioner, load_captioner
from ica_captioning.training import NonFiniteLossError, train_captioner
from ica_captioning.training import loop as loop_mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def _train(cfg, data, **kw):
    return train_captioner(
        cfg,
        data["images"],
        data["encoded_captions"],
        data["pseudo_labels"],
        data["vocabulary"],
        data["images_dir"],
        **kw,
    )


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_resume_after_kill_gives_identical_weights(data, tmp_path):
    cfg = tiny_config(tmp_path / "a", epochs=3, decoder={"dropout": 0.3}, max_train_images=6)
    full, hist_full = _train(cfg, data)
    assert len(hist_full) == 3

    class Killed(Exception):
        pass

    def kill_after_first(epoch):
        if epoch == 1:
            raise Killed

    cfg_b = tiny_config(tmp_path / "b", epochs=3, decoder={"dropout": 0.3}, max_train_images=6)
    with pytest.raises(Killed):
        _train(cfg_b, data, on_epoch_end=kill_after_first)
    ckpts = list((tmp_path / "b" / "ckpt").glob("*/last.pt"))
    assert len(ckpts) == 1
    seen = []
    resumed, hist_res = _train(cfg_b.replace(resume=True), data, on_epoch_end=seen.append)
    assert seen == [2, 3]  # really resumed: epoch 1 was not trained again
    _assert_same_weights(full["state_dict"], resumed["state_dict"])
    cols = ["epoch", "train_loss", "train_ce", "train_ica", "val_bleu4", "val_attention_mass"]
    np.testing.assert_array_equal(hist_full[cols].to_numpy(), hist_res[cols].to_numpy())


@pytest.mark.slow
def test_history_and_bundle(data, tmp_path):
    cfg = tiny_config(tmp_path, epochs=2)
    bundle, hist = _train(cfg, data)
    for col in (
        "train_ce",
        "train_dsr",
        "train_ica",
        "val_bleu4",
        "val_ce",
        "val_ica",
        "val_attention_mass",
        "val_attention_iou",
        "epoch_time_s",
        "images_per_s",
        "lr",
    ):
        assert col in hist.columns, col
    assert hist["lr"].tolist() == [0.01, 0.005]  # step schedule, gamma 0.5 per epoch
    assert hist["train_ica"].notna().all() and (hist["train_ica"] > 0).all()
    assert 0 <= hist["val_attention_mass"].iloc[-1] <= 1
    model = load_captioner(bundle)
    assert bundle["config"]["lambda_aux"] == 0.1
    assert model.decoder.vocab_size == len(data["vocabulary"]["itos"])
    # λ = 0: the ICA term is not computed in training (NaN in history) but still measured on val.
    _, hist0 = _train(tiny_config(tmp_path / "b", epochs=1, lambda_aux=0.0), data)
    assert math.isnan(hist0["train_ica"].iloc[0]) and hist0["val_ica"].notna().all()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, epochs=3)
    real = loop_mod.loss_terms
    calls = {"n": 0}
    steps_per_epoch = math.ceil(len(data["encoded_captions"].query("split == 'train'")) / 4)

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        if not torch.is_grad_enabled():  # validation pass, not a training step
            return terms
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 2:  # second step of epoch 2
            terms.ce_sum = terms.ce_sum * float("nan")
        return terms

    monkeypatch.setattr(loop_mod, "loss_terms", poisoned)
    snapshots = {}

    def remember(epoch):
        path = next((tmp_path / "ckpt").glob("*/last.pt"))
        snapshots[epoch] = torch.load(path, weights_only=False)["model"]

    with pytest.raises(
        NonFiniteLossError, match="epoch 2, step 1.*last good checkpoint \\(epoch 1"
    ):
        _train(cfg, data, on_epoch_end=remember)
    path = next((tmp_path / "ckpt").glob("*/last.pt"))
    kept = torch.load(path, weights_only=False)
    assert kept["state"]["epoch"] == 1
    _assert_same_weights(kept["model"], snapshots[1])
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_fine_tuning_path_without_cache(data, tmp_path):
    cfg = tiny_config(
        tmp_path, epochs=1, encoder={"fine_tune_blocks": 1}, max_train_images=4, val_max_images=2
    )
    bundle, hist = _train(cfg, data)
    assert not (tmp_path / "cache").exists()  # a trained encoder is never cached
    before = tiny_config(tmp_path, epochs=1)
    init = build_captioner(before, len(data["vocabulary"]["itos"])).state_dict()
    key = "encoder.blocks.0.1.conv2.weight"  # upper block of layer1: fine-tuned
    assert not torch.equal(bundle["state_dict"][key], init[key])
    assert torch.equal(bundle["state_dict"]["encoder.stem.0.weight"], init["encoder.stem.0.weight"])


@pytest.mark.slow
def test_ddp_two_processes_equal_single_process_on_combined_batch(data, tmp_path):
    """gloo, 2 CPU processes × 4 captions == 1 process × 8 captions, after one step."""
    common = dict(epochs=1, max_train_images=4, early_stopping={"patience": None}, grad_clip=None)
    single_cfg = tiny_config(tmp_path / "s", batch_size=8, **common)
    ddp_cfg = tiny_config(
        tmp_path / "d", batch_size=4, distributed={"num_processes": 2, "backend": "gloo"}, **common
    )
    n_train = len(data["encoded_captions"].query("split == 'train' and image_id < 4"))
    assert n_train == 8  # exactly one global batch: one optimiser step
    single, _ = _train(single_cfg, data)
    ddp, hist = _train(ddp_cfg, data)
    init = build_captioner(single_cfg, len(data["vocabulary"]["itos"]))
    changed = 0
    for k, v in single["state_dict"].items():
        # Adam turns round-off in near-zero gradients into up to ±lr steps; 1e-5 is 0.1 % of the
        # step size (lr = 0.01) and far below any real discrepancy.
        torch.testing.assert_close(ddp["state_dict"][k], v, rtol=1e-4, atol=1e-5)
        changed += not torch.equal(v, init.state_dict()[k])
    assert changed > 5  # the step really moved the decoder
    assert hist["images_per_s"].iloc[0] > 0
