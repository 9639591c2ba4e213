"""Encoder pretraining: training split only, targets, cache, determinism, loading the weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from project_conf import section
from pycocotools import mask as mask_utils

import ica_captioning.pretraining.fit as fit_module
from ica_captioning.model.encoder import Encoder
from ica_captioning.params import PretrainingParams, TrainParams
from ica_captioning.params.train import EncoderParams
from ica_captioning.pipelines.pretraining.nodes import pretrain_encoder_node
from ica_captioning.pretraining import (
    PretrainingDataError,
    occupancy_targets,
    pretrain_encoder,
    pretraining_fingerprint,
    with_pretrained_weights,
)

SIZE = 32
ENCODER = EncoderParams.parse(
    {
        "backbone": "resnet18",
        "weights": "pretrained",
        "layer": "layer1",
        "grid_size": 4,
        "image_size": SIZE,
        "fine_tune_blocks": 0,
        "init_seed": 0,
        "standardize": True,
    },
    "train.encoder",
)


def params(tmp_path: Path, **changes) -> PretrainingParams:
    raw = section("pretraining") | {
        "epochs": 2,
        "batch_size": 4,
        "progress": False,
        "cache_dir": str(tmp_path / "cache"),
    }
    return PretrainingParams.parse(raw | changes, "pretraining")


def _rle(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


def make_data(root: Path, n: dict[str, int] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images with one square or disc each, and their detections (the masks drawn)."""
    n = n or {"train": 8, "val": 3, "test": 3}
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, detections = [], []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image_id = 0
    for split, count in n.items():
        for _ in range(count):
            image_id += 1
            cls = ["square", "disc"][image_id % 2]
            cx, cy, r = *rng.integers(8, 24, size=2), 6
            if cls == "square":
                mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
            else:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            pixels = np.full((SIZE, SIZE, 3), 120, np.uint8)
            pixels[mask] = (220, 30, 30)
            name = f"images/{image_id:03d}.png"
            Image.fromarray(pixels).save(root / name)
            images.append({"image_id": image_id, "file_path": name, "split": split})
            detections.append(
                {
                    "image_id": image_id,
                    "class_name": cls,
                    "score": 1.0,
                    "rle_counts": _rle(mask),
                    "height": SIZE,
                    "width": SIZE,
                    "status": "ok",
                }
            )
    return pd.DataFrame(images), pd.DataFrame(detections)


def test_targets_against_a_hand_made_mask():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True  # cell (1, 1) full, cell (1, 2) half (grid 4: 2-pixel cells)
    det = pd.DataFrame(
        [
            {
                "image_id": 7,
                "class_name": "b",
                "score": 0.9,
                "rle_counts": _rle(mask),
                "height": 8,
                "width": 8,
                "status": "ok",
            },
            {  # below the threshold: ignored
                "image_id": 7,
                "class_name": "a",
                "score": 0.1,
                "rle_counts": _rle(~mask),
                "height": 8,
                "width": 8,
                "status": "ok",
            },
            {  # another image with nothing found
                "image_id": 8,
                "class_name": None,
                "score": np.nan,
                "rle_counts": None,
                "height": 8,
                "width": 8,
                "status": "no_detections",
            },
        ]
    )
    t = occupancy_targets(det, [7, 8], grid_size=4, score_threshold=0.5)
    assert t.classes == ("b",)
    expected = np.zeros((2, 2, 4, 4), np.float32)
    expected[:, 0] = 1.0
    expected[0, 1, 1, 1], expected[0, 0, 1, 1] = 1.0, 0.0
    expected[0, 1, 1, 2], expected[0, 0, 1, 2] = 0.5, 0.5
    np.testing.assert_allclose(t.cells, expected)
    np.testing.assert_array_equal(t.inst_image, [0])
    np.testing.assert_array_equal(t.inst_class, [0])
    weights = np.zeros(16, np.float32)
    weights[5], weights[6] = 1 / 1.5, 0.5 / 1.5
    np.testing.assert_allclose(t.inst_weight[0], weights, rtol=1e-6)
    with pytest.raises(PretrainingDataError, match="no detection record"):
        occupancy_targets(det, [7, 8, 9], grid_size=4, score_threshold=0.5)
    with pytest.raises(PretrainingDataError, match="no instance with score"):
        occupancy_targets(det, [7, 8], grid_size=4, score_threshold=0.95)


def test_only_training_images_are_read(tmp_path, monkeypatch):
    images, detections = make_data(tmp_path)
    # Val and test images are unreadable and their detections are not even valid RLE: a
    # pretraining that opened or decoded any of them would fail.
    for rel in images.loc[images["split"] != "train", "file_path"]:
        (tmp_path / rel).write_bytes(b"not an image")
    detections.loc[images["split"].to_numpy() != "train", "rle_counts"] = "garbage"
    read: list[str] = []
    real = fit_module.preprocess_images

    def spy(paths, *args, **kwargs):
        read.extend(paths)
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(fit_module, "preprocess_images", spy)
    bundle = pretrain_encoder(params(tmp_path), ENCODER, images, detections, tmp_path)
    train = images[images["split"] == "train"]
    assert sorted(read) == sorted(train["file_path"])
    assert bundle["image_ids"] == sorted(train["image_id"])
    assert bundle["classes"] == ["disc", "square"]
    assert len(bundle["history"]) == 2 and not bundle["from_cache"]


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    images, detections = make_data(tmp_path)
    p = params(tmp_path)
    first = pretrain_encoder(p, ENCODER, images, detections, tmp_path)
    calls = []
    real_fit = fit_module.fit_trunk

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit_trunk", counting_fit)
    again = pretrain_encoder(p, ENCODER, images, detections, tmp_path)
    assert again["from_cache"] and not calls
    for key, value in first["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key

    # Val/test data do not enter the fingerprint: changing them keeps the cache.
    other = detections.copy()
    other.loc[images["split"].to_numpy() == "val", "score"] = 0.7
    assert pretrain_encoder(p, ENCODER, images, other, tmp_path)["from_cache"]
    assert not calls

    # A setting, a training detection or a training image file changes it: retrain.
    base = pretraining_fingerprint(p, ENCODER, images, detections, tmp_path)
    changed_train = detections.copy()
    changed_train.loc[0, "score"] = 0.9
    assert pretraining_fingerprint(p, ENCODER, images, changed_train, tmp_path) != base
    assert (
        pretraining_fingerprint(params(tmp_path, lr=0.01), ENCODER, images, detections, tmp_path)
        != base
    )
    arch = ENCODER.model_copy(update={"init_seed": 1})
    assert pretraining_fingerprint(p, arch, images, detections, tmp_path) != base
    # Settings that do not change the result do not change the fingerprint either.
    assert (
        pretraining_fingerprint(
            params(tmp_path, progress=True), ENCODER, images, detections, tmp_path
        )
        == base
    )
    first_image = tmp_path / images.loc[0, "file_path"]
    stat = first_image.stat()
    os.utime(first_image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    retrained = pretrain_encoder(p, ENCODER, images, detections, tmp_path)
    assert not retrained["from_cache"] and len(calls) == 1

    # A corrupt cache file is trained again, not trusted.
    Path(retrained["path"]).write_bytes(b"truncated")
    assert not pretrain_encoder(p, ENCODER, images, detections, tmp_path)["from_cache"]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_fixed_seed_is_deterministic(tmp_path, precision):
    images, detections = make_data(tmp_path)
    runs = [
        pretrain_encoder(
            params(tmp_path / f"run{k}", precision=precision), ENCODER, images, detections, tmp_path
        )
        for k in range(2)
    ]
    assert not runs[1]["from_cache"]
    for key, value in runs[0]["state_dict"].items():
        assert torch.equal(value, runs[1]["state_dict"][key]), key
    other = pretrain_encoder(
        params(tmp_path / "seed1", precision=precision, seed=1),
        ENCODER,
        images,
        detections,
        tmp_path,
    )
    assert not torch.equal(
        other["state_dict"]["conv1.weight"], runs[0]["state_dict"]["conv1.weight"]
    )
    # The trunk changed from its initialisation, BatchNorm statistics included.
    init = Encoder.from_params(ENCODER.model_copy(update={"weights": "none"}))
    assert not torch.equal(init.stem[0].weight, runs[0]["state_dict"]["conv1.weight"])
    assert not torch.equal(init.stem[1].running_mean, runs[0]["state_dict"]["bn1.running_mean"])


def test_training_loads_the_pretrained_weights(tmp_path):
    images, detections = make_data(tmp_path)
    bundle = pretrain_encoder(params(tmp_path), ENCODER, images, detections, tmp_path)
    train = TrainParams.parse(section("train"), "train").replace(encoder=ENCODER.to_dict())
    resolved = with_pretrained_weights(train, bundle)
    assert resolved.encoder.weights == bundle["path"]
    encoder = Encoder.from_params(resolved.encoder)
    assert torch.equal(encoder.stem[0].weight, bundle["state_dict"]["conv1.weight"])
    assert torch.equal(
        encoder.blocks[0][0].bn1.running_var, bundle["state_dict"]["layer1.0.bn1.running_var"]
    )
    # A bundle from another machine: the weights file is written again from it.
    os.remove(bundle["path"])
    with_pretrained_weights(train, bundle)
    assert Path(bundle["path"]).is_file()
    # Other weights settings pass through.
    none = train.replace(encoder={"weights": "none"})
    assert with_pretrained_weights(none, bundle) is none
    with pytest.raises(ValueError, match="train.encoder.layer 'layer1' there, 'layer2' here"):
        with_pretrained_weights(train.replace(encoder={"layer": "layer2"}), bundle)
    with pytest.raises(ValueError, match="holds no weights .*IMAGENET"):
        with_pretrained_weights(train, {"state_dict": None, "skipped": "weights is IMAGENET1K_V1"})


def test_node_skips_when_other_weights_are_configured(tmp_path):
    images, detections = make_data(tmp_path)
    train = section("train")
    train["encoder"] = ENCODER.to_dict() | {"weights": "IMAGENET1K_V1"}
    dataset = section("dataset") | {"images_dir": str(tmp_path)}
    bundle, history = pretrain_encoder_node(
        images, detections, section("pretraining"), train, dataset
    )
    assert bundle["state_dict"] is None and "IMAGENET1K_V1" in bundle["skipped"]
    assert history.empty and "train_instance_accuracy" in history.columns
    assert not (tmp_path / "cache").exists()
    # conf/gpu is such an environment: ImageNet weights, no in-domain pretraining.
    assert section("train", "gpu")["encoder"]["weights"].startswith("IMAGENET")


def test_train_node_starts_from_the_pretrained_trunk(tmp_path):
    """The train node loads the bundle's weights into the captioner's (frozen) encoder."""
    import tiny_data

    from ica_captioning.pipelines.train.nodes import train_model

    images, detections = make_data(tmp_path / "pre")
    bundle = pretrain_encoder(params(tmp_path), ENCODER, images, detections, tmp_path / "pre")
    data = tiny_data.make_tiny_dataset(tmp_path / "data")  # the same architecture as ENCODER
    train = section("train")
    for key, value in tiny_data.TINY_CONFIG.items():
        train[key] = {**train[key], **value} if isinstance(value, dict) else value
    train.update(epochs=1, checkpoint_dir=str(tmp_path / "ckpt"))
    train["encoder"] = ENCODER.to_dict()
    train["feature_cache"] = {**train["feature_cache"], "dir": str(tmp_path / "features")}
    model, history = train_model(
        data["images"],
        data["encoded_captions"],
        data["pseudo_labels"],
        data["vocabulary"],
        bundle,
        train,
        {},
        section("dataset", images_dir=data["images_dir"]),
    )
    state = model["state_dict"]
    assert torch.equal(state["encoder.stem.0.weight"], bundle["state_dict"]["conv1.weight"])
    assert torch.equal(
        state["encoder.blocks.0.1.bn2.running_mean"],
        bundle["state_dict"]["layer1.1.bn2.running_mean"],
    )
    assert model["config"]["encoder"]["weights"] == bundle["path"]
    assert len(history) == 1
