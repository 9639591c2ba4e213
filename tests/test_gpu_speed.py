"""The GPU speed benchmark's batches are well-formed and its CPU dry run measures every step."""

from __future__ import annotations

import re
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_speed  # noqa: E402


def test_make_batches_are_captions_with_one_end_and_labels_on_words():
    args = Namespace(vocab=50, image_size=16)
    (batch,) = gpu_speed.make_batches(args, batch=6, n=1)
    ids = batch["ids"]  # [B, T+1]
    b, t1 = ids.shape
    assert batch["images"].shape == (6, 3, 16, 16)
    assert (ids[:, 0] == 1).all()
    assert ((ids == 2).sum(1) == 1).all()  # exactly one <end> per caption
    ends = (ids == 2).int().argmax(1)  # [B]
    pos = torch.arange(t1)[None]
    assert (ids[pos > ends[:, None]] == 0).all()  # <pad> after <end>
    assert (ids[(pos > 0) & (pos < ends[:, None])] >= 4).all()  # words in between
    assert batch["ica_targets"].shape == (6, t1 - 1, 196)
    # A labelled position is a word (target neither <end> nor <pad>) with a non-empty mask.
    targets = ids[:, 1:]
    valid = batch["ica_valid"]
    assert (targets[valid] >= 4).all()
    assert batch["ica_targets"][valid].any(dim=-1).all()


@pytest.mark.slow
def test_cpu_dry_run_times_each_variant_and_profiles(monkeypatch, capsys):
    argv = ["gpu_speed.py", "--device", "cpu", "--variants", "eager", "cached", "--sweep"]
    argv += ["--steps", "1", "--warmup", "1", "--profile-steps", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    gpu_speed.main()
    out = capsys.readouterr().out
    eager = re.search(r"eager\s+batch\s+2:\s+([\d.]+) ms/step\s+([\d.]+) images/s", out)
    cached = re.search(r"cached\s+batch\s+2:.*images/s, ([\d.]+)x eager", out)
    assert eager and cached, out
    assert float(eager.group(2)) > 0 and float(cached.group(1)) > 0
    assert "profile of 1 eager steps, batch 2" in out


def test_compile_variant_compiles_what_teacher_forcing_runs_per_word(monkeypatch):
    # torch.compile recorded, not run: the compiled function must be the one forward calls.
    compiled, calls = [], []

    def fake_compile(fn, **kwargs):
        compiled.append((fn.__name__, kwargs))

        def wrapper(*args):
            calls.append(fn.__name__)
            return fn(*args)

        return wrapper

    monkeypatch.setattr(torch, "compile", fake_compile)
    args = Namespace(
        backbone="resnet18", image_size=32, dim=16, vocab=30, amp_dtype=None, distinct_batches=1
    )
    args.cfg = gpu_speed.train_params(args)
    (batch,) = gpu_speed.make_batches(args, batch=2, n=1)
    bench = gpu_speed.Bench(args, torch.device("cpu"), "compile", batch["images"])
    seconds, loss = bench.step(batch)
    assert compiled == [("_recur", {"dynamic": True, "mode": "default"})]
    steps = int((batch["ids"][:, :-1] != 0).sum(1).max())  # <start> + words of the longest
    assert len(calls) == steps and loss > 0 and seconds > 0
