"""Training loop: resume equality, NaN handling, DDP equality, fine-tuning path, history."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_data import make_tiny_dataset, tiny_config, train_tiny

from ica_captioning.model import build_captioner, load_captioner
from ica_captioning.training import (
    NonFiniteLossError,
    NoTrainingLabelsError,
    prepare_job,
)
from ica_captioning.training import job as job_mod
from ica_captioning.training import loop as loop_mod


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


_train = train_tiny


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


def _assert_same_training(a, hist_a, b, hist_b):
    """Same weights and same per-epoch training losses, up to float32 round-off."""
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=1e-5, atol=1e-6)
    cols = ["train_loss", "train_ce", "train_dsr", "train_ica"]
    np.testing.assert_allclose(hist_b[cols].to_numpy(), hist_a[cols].to_numpy(), rtol=1e-6)


@pytest.mark.slow
def test_ddp_two_processes_equal_single_process_over_three_sgd_steps(data, tmp_path, monkeypatch):
    """gloo, 2 CPU processes × 4 captions == 1 process × 8 captions, over 3 plain-SGD steps.

    The 8 training captions are one global batch, so each of the 3 epochs is one optimiser step
    and the history rows are the per-step losses. SGD without momentum moves the weights by
    ``-lr · g``: a loss normaliser off by a factor changes every step (Adam's update is nearly
    invariant to the loss scale, so the former one-step Adam check could not see it). The last
    part shows the comparison catches that bug: a single-process reference whose normalisers
    are 2× the counts (what DDP computes when ``global_normalisers`` forgets ``/ world``) fails.
    Checked by hand too (temporary edits of src/, spawned processes re-import it): removing
    ``/ worker.world`` from ``global_normalisers`` makes the DDP run fail the weight check
    (max |Δw| 0.19, tolerance 1e-6 + 1e-5·|w|; without the bug max |Δw| is 1.8e-7, 5 % of the
    tolerance), and skipping ``global_means`` fails the loss check (rank 0 logged 3.41 for the
    first step, whose global loss is 3.65; without the bug losses agree to 1e-7 relative).
    """
    common = dict(
        epochs=3,
        max_train_images=4,
        optimizer="sgd",
        lr=0.3,
        lr_schedule={"type": "none"},
        grad_clip=None,
        early_stopping={"patience": None, "restore_best": False},
    )
    single_cfg = tiny_config(tmp_path / "s", batch_size=8, **common)
    ddp_cfg = tiny_config(
        tmp_path / "d", batch_size=4, distributed={"num_processes": 2, "backend": "gloo"}, **common
    )
    n_train = len(data["encoded_captions"].query("split == 'train' and image_id < 4"))
    assert n_train == 8  # exactly one global batch per epoch: one optimiser step each
    single, hist_single = _train(single_cfg, data)
    ddp, hist = _train(ddp_cfg, data)
    assert len(hist) == len(hist_single) == 3
    _assert_same_training(single, hist_single, ddp, hist)
    # The steps really trained: every step's loss differs from the last and the decoder moved.
    assert np.all(np.abs(np.diff(hist_single["train_loss"].to_numpy())) > 1e-3)
    init = build_captioner(single_cfg, len(data["vocabulary"]["itos"])).state_dict()
    assert sum(not torch.equal(v, init[k]) for k, v in single["state_dict"].items()) > 5
    assert hist["images_per_s"].iloc[0] > 0

    # A normaliser off by the world size (2) fails the same comparison.
    real_combine = loop_mod.combine

    def off_by_world(terms, alpha_c, lambda_aux, norms=None):
        assert norms is None  # single process: combine would use the local counts
        counts = (2 * terms.n_tokens, 2 * terms.n_dsr, 2 * terms.n_pairs)
        return real_combine(terms, alpha_c, lambda_aux, counts)

    monkeypatch.setattr(loop_mod, "combine", off_by_world)
    wrong, hist_wrong = _train(tiny_config(tmp_path / "w", batch_size=8, **common), data)
    with pytest.raises(AssertionError):
        _assert_same_training(wrong, hist_single, ddp, hist_single)  # weights alone
    with pytest.raises(AssertionError):
        _assert_same_training(single, hist_wrong, single, hist)  # logged losses alone


def test_ica_without_training_labels_stops_before_any_training_work(data, tmp_path, monkeypatch):
    # λ > 0 and no labelled (caption, token) pair in the training split: an error, raised
    # before the feature cache or the model is built (before, fit only logged a warning and
    # trained the baseline again under the ICA name).
    def no_work(*args, **kwargs):
        raise AssertionError("training work started")

    monkeypatch.setattr(job_mod, "build_feature_cache", no_work)
    monkeypatch.setattr(job_mod, "build_captioner", no_work)
    caps = data["encoded_captions"]
    train_ids = caps.loc[caps["split"] == "train", "caption_id"]
    labels = data["pseudo_labels"]
    val_only = labels[~labels["caption_id"].isin(train_ids)].assign(split="val")
    cfg = tiny_config(tmp_path)
    with pytest.raises(NoTrainingLabelsError) as err:
        _train(cfg, data | {"pseudo_labels": val_only})
    text = str(err.value)
    assert "train.lambda_aux=0.1 but none of the 16 training captions has a pseudo-label" in text
    assert f"by split {{'val': {len(val_only)}}}" in text and "train.lambda_aux=0" in text
    for empty in (None, labels.iloc[:0]):
        with pytest.raises(NoTrainingLabelsError, match="the pseudo_labels table is empty"):
            _train(cfg, data | {"pseudo_labels": empty})
    # Labels only on images that train.max_train_images cuts away.
    first_two = caps.loc[caps["image_id"] < 2, "caption_id"]
    late = labels[~labels["caption_id"].isin(first_two)]
    with pytest.raises(NoTrainingLabelsError, match="max_train_images=2 training images keep"):
        _train(tiny_config(tmp_path, max_train_images=2), data | {"pseudo_labels": late})
    assert not (tmp_path / "cache").exists() and not (tmp_path / "ckpt").exists()


def test_baseline_without_labels_is_fine_and_fit_checks_too(data, tmp_path):
    # λ = 0 needs no labels; a job built for it and then given λ > 0 is refused by fit itself.
    job = prepare_job(
        tiny_config(tmp_path, lambda_aux=0.0),
        data["images"],
        data["encoded_captions"],
        None,
        data["vocabulary"],
        data["images_dir"],
    )
    assert job.train_set.num_labels == 0
    job.params = job.params.replace(lambda_aux=0.1)
    with pytest.raises(NoTrainingLabelsError, match="lambda_aux=0.1"):
        loop_mod.fit(job, loop_mod.Worker(torch.device("cpu")))
