"""Resuming from a damaged ``last.pt``: the run stops, naming the file and how to start afresh."""

from __future__ import annotations

import io

import pytest
import torch
from tiny_data import make_tiny_dataset, tiny_config, train_tiny

from ica_captioning.training.checkpoint import CorruptCheckpointError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"), n_train=2, n_val=1)


_train = train_tiny


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_corrupt_checkpoint_with_resume_stops_naming_the_file_and_the_way_out(data, tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    _train(cfg, data)
    (path,) = (tmp_path / "ckpt").glob("*/last.pt")
    good = path.read_bytes()
    damaged = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not a torch file": b"not a checkpoint",
        "torch file without the run's state": _saved({"model": {"decoder.bogus": torch.ones(1)}}),
    }
    for what, content in damaged.items():
        path.write_bytes(content)
        with pytest.raises(CorruptCheckpointError) as err:
            _train(cfg.replace(resume=True), data)
        message = str(err.value)
        assert f"checkpoint {path} cannot be restored" in message, what
        assert f"delete {path}, or set train.resume=false" in message, what
    # The way out the message gives: resume=false trains afresh and overwrites the file.
    _, hist = _train(cfg, data)
    assert hist["epoch"].tolist() == [1]
    assert torch.load(path, weights_only=False)["state"]["epoch"] == 1
    # And the repaired checkpoint resumes (nothing left to train: epochs already reached).
    _, resumed = _train(cfg.replace(resume=True), data)
    assert resumed["epoch"].tolist() == [1]
