"""A damaged feature cache file under the right name is encoded again, with the reason logged."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from project_conf import model_params

from ica_captioning.model import build_captioner, preprocess_images
from ica_captioning.model.features import build_feature_cache


@pytest.fixture
def cache_setup(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        paths.append(f"{i}.png")
    params = model_params(encoder={"layer": "layer1", "grid_size": 2, "image_size": 32})
    encoder = build_captioner(params, 5).encoder
    calls = []
    orig = encoder.forward
    encoder.forward = lambda x: (calls.append(len(x)), orig(x))[1]

    def build():
        return build_feature_cache(
            encoder, params.encoder, [0, 1, 2], paths, tmp_path, tmp_path / "c",
            dtype="float32", batch_size=64, device="cpu",
        )  # fmt: skip

    with torch.no_grad():  # eval: frozen BatchNorm, as the cache encodes
        expected = encoder.eval()(preprocess_images(paths, 32, root=tmp_path))  # [3, 4, 64]
    calls.clear()
    return build, calls, expected


def test_damaged_feature_cache_is_encoded_again_with_the_reason(cache_setup, caplog):
    build, calls, expected = cache_setup
    path = build().path
    assert calls == [3]
    file = Path(path)
    good = file.read_bytes()
    n, cells, dim = expected.shape

    def save(array):
        np.save(path, array)

    damage = {
        "truncated": (lambda: file.write_bytes(good[: len(good) // 2]), "truncated"),
        "empty": (lambda: file.write_bytes(b""), "unreadable"),
        "not npy": (lambda: file.write_bytes(b"garbage" * 100), "unreadable"),
        "fewer images": (lambda: save(np.zeros((n - 1, cells, dim), "float32")), "of shape"),
        "other grid": (lambda: save(np.zeros((n, cells + 5, dim), "float32")), "of shape"),
        "other channels": (lambda: save(np.zeros((n, cells, dim * 2), "float32")), "of shape"),
        "2-d": (lambda: save(np.zeros((n, cells), "float32")), "of shape"),
        "float16": (lambda: save(np.zeros((n, cells, dim), "float16")), "of dtype float16"),
    }
    for what, (write, reason) in damage.items():
        write()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ica_captioning.model.features"):
            source = build()
        assert calls[-1] == 3 and len(calls) >= 2, what  # encoded again
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and path in warnings[0], what
        assert reason in warnings[0] and "encoding the images again" in warnings[0], what
        torch.testing.assert_close(source(torch.arange(n)), expected)  # the right features
    assert len(calls) == 1 + len(damage)
    # The repaired file is used again without encoding or warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ica_captioning.model.features"):
        build()
    assert len(calls) == 1 + len(damage) and not caplog.records
