from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from coco_toys import SIZES

from ica_captioning.data.tables import quarantine_row
from ica_captioning.detection import (
    DetectionConfigError,
    ImageDetections,
    image_records,
    merge_shards,
    run_sharded,
)
from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.detection.base import DetectorBackend

#: One process owning every shard, no progress bar.
SINGLE = {"shard_index": 0, "num_shards": 1, "progress": False}


class Counting(DetectorBackend):
    """Wraps a backend; counts images and can simulate a kill after some batches."""

    name = "annotations"

    def __init__(self, inner, batch_size=1, die_after=None):
        self.inner, self.batch_size, self.die_after = inner, batch_size, die_after
        self.seen: list[int] = []

    def detect(self, records):
        if self.die_after is not None and len(self.seen) >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.seen += [r.image_id for r in records]
        return self.inner.detect(records)

    def preflight_quarantine(self):
        return self.inner.preflight_quarantine()

    def fingerprint(self):
        return self.inner.fingerprint()


def many_images(toy, n=10):
    """n image records reusing the toy's three files and sizes (ids 1..n)."""
    rows = []
    for i in range(1, n + 1):
        src = (i - 1) % 3 + 1
        h, w = SIZES[src]
        rows.append({"image_id": i, "file_path": f"images/{src:06d}.png", "width": w, "height": h})
    return pd.DataFrame(rows)


def test_resume_after_interruption_skips_finished_shards(toy, tmp_path):
    images = many_images(toy)
    records = image_records(images, toy.root)
    inner = AnnotationsBackend(toy.instances, images, include_crowd=True)
    shards = tmp_path / "shards"
    killed = Counting(inner, die_after=7)  # dies in the 4th shard of 3 images
    with pytest.raises(KeyboardInterrupt):
        run_sharded(killed, records, shards, shard_size=3, **SINGLE)
    (folder,) = shards.iterdir()
    done = sorted(p.name for p in folder.glob("shard-*[0-9].parquet"))
    assert done == ["shard-00000.parquet", "shard-00001.parquet"]
    before = {p: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    # A temp file left by a kill in the middle of a write is not taken for a finished shard.
    (folder / ".shard-00002.parquet.999.tmp").write_bytes(b"partial")

    again = Counting(inner)
    report = run_sharded(again, records, shards, shard_size=3, **SINGLE)
    assert again.seen == [7, 8, 9, 10]  # only shards 2 and 3
    assert report["status"].tolist() == ["skipped", "skipped", "done", "done"]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # untouched

    detections, quarantine = merge_shards(folder, records, 3)
    assert sorted(detections["image_id"].unique()) == list(range(1, 11))
    assert quarantine.empty
    # Same as one uninterrupted run.
    fresh = run_sharded(Counting(inner), records, tmp_path / "fresh", shard_size=3, **SINGLE)
    ref, _ = merge_shards(fresh["run_dir"].iat[0], records, 3)
    pd.testing.assert_frame_equal(detections, ref)


def test_disjoint_shards_across_processes_then_merge(toy, tmp_path):
    images = many_images(toy, 11)
    records = image_records(images, toy.root)
    inner = AnnotationsBackend(toy.instances, images, include_crowd=True)
    seen = []
    for k in range(3):
        b = Counting(inner)
        rep = run_sharded(
            b, records, tmp_path, shard_size=2, shard_index=k, num_shards=3, progress=False
        )
        assert rep["shard"].tolist() == [s for s in range(6) if s % 3 == k]
        seen.append(set(b.seen))
        if k == 0:
            with pytest.raises(FileNotFoundError, match="4 of 6 detection shards"):
                merge_shards(rep["run_dir"].iat[0], records, 2)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2])
    assert set().union(*seen) == set(range(1, 12))
    detections, _ = merge_shards(rep["run_dir"].iat[0], records, 2)
    assert detections["image_id"].is_monotonic_increasing
    assert set(detections["image_id"]) == set(range(1, 12))


def test_changed_settings_start_a_fresh_folder(toy, tmp_path):
    images = many_images(toy, 4)
    records = image_records(images, toy.root)
    a = run_sharded(
        AnnotationsBackend(toy.instances, images, include_crowd=True),
        records,
        tmp_path,
        shard_size=2,
        **SINGLE,
    )
    b = run_sharded(
        AnnotationsBackend(toy.instances, images, include_crowd=False),
        records,
        tmp_path,
        shard_size=2,
        **SINGLE,
    )
    assert a["run_dir"].iat[0] != b["run_dir"].iat[0]
    assert (b["status"] == "done").all()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"shard_size": 0}, "shard_size"),
        ({"num_shards": 0}, "num_shards"),
        ({"shard_index": 2, "num_shards": 2}, "shard_index=2"),
    ],
)
def test_bad_sharding_parameters(toy, tmp_path, kw, match):
    images = many_images(toy, 2)
    backend = AnnotationsBackend(toy.instances, images, include_crowd=True)
    with pytest.raises(DetectionConfigError, match=match):
        run_sharded(
            backend, image_records(images, toy.root), tmp_path, **{"shard_size": 2, **SINGLE, **kw}
        )


class Wrong(DetectorBackend):
    name = "wrong"
    batch_size = 2

    def __init__(self, mode):
        self.mode = mode

    def detect(self, records):
        if self.mode == "skip":
            return [], []
        if self.mode == "undecodable":
            return [], [
                quarantine_row("detection", r.path, r.image_id, r.image_id, "broken")
                for r in records
            ]
        # Mask of the wrong size.
        return [
            ImageDetections(
                r.image_id, r.height + 1, r.width, ["dog"], [0.9], np.zeros((1, 4)), ["0"]
            )
            for r in records
        ], []


def test_mask_size_disagreeing_with_image_is_quarantined(toy, tmp_path):
    images = many_images(toy, 2)
    records = image_records(images, toy.root)
    rep = run_sharded(Wrong("size"), records, tmp_path, shard_size=4, **SINGLE)
    detections, quarantine = merge_shards(rep["run_dir"].iat[0], records, 4)
    assert detections.empty
    assert quarantine["image_id"].tolist() == [1, 2]
    assert quarantine["reason"].iat[0] == (
        "mask size 33x48 disagrees with image size 32x48 in the images table"
    )


def test_backend_losing_an_image_is_an_error(toy, tmp_path):
    images = many_images(toy, 2)
    with pytest.raises(RuntimeError, match=r"no result for image\(s\) \[1, 2\]"):
        run_sharded(
            Wrong("skip"), image_records(images, toy.root), tmp_path, shard_size=4, **SINGLE
        )


def test_image_id_zero_and_bad_images_tables(toy, tmp_path):
    from ica_captioning.detection import validate_images_table

    images = many_images(toy, 2)
    images["image_id"] = [0, 1]  # Flickr's Karpathy ids start at 0
    records = image_records(validate_images_table(images), toy.root)
    rep = run_sharded(Wrong("undecodable"), records, tmp_path, shard_size=4, **SINGLE)
    detections, quarantine = merge_shards(rep["run_dir"].iat[0], records, 4)
    assert detections.empty and quarantine["image_id"].tolist() == [0, 1]
    with pytest.raises(DetectionConfigError, match=r"lacks column\(s\) \['width'\]"):
        validate_images_table(images.drop(columns="width"))
    nulls = images.astype({"width": "float"})
    nulls.loc[1, "width"] = None
    with pytest.raises(DetectionConfigError, match=r"missing or non-positive width .*\[1\]"):
        validate_images_table(nulls)
    with pytest.raises(DetectionConfigError, match=r"repeats image_id\(s\) \[0\]"):
        validate_images_table(images.assign(image_id=[0, 0]))


def test_damaged_or_foreign_shards_are_recomputed_with_the_reason(toy, tmp_path, caplog):
    images = many_images(toy, 8)
    records = image_records(images, toy.root)
    inner = AnnotationsBackend(toy.instances, images, include_crowd=True)
    report = run_sharded(Counting(inner), records, tmp_path / "a", shard_size=2, **SINGLE)
    folder = Path(report["run_dir"].iat[0])
    reference, _ = merge_shards(folder, records, 2)
    # The same shard under other settings (include_crowd=False): another run's folder.
    other = run_sharded(
        Counting(AnnotationsBackend(toy.instances, images, include_crowd=False)),
        records,
        tmp_path / "b",
        shard_size=2,
        **SINGLE,
    )
    foreign = Path(other["run_dir"].iat[0]) / "shard-00002.parquet"
    shard = lambda k: folder / f"shard-{k:05d}.parquet"  # noqa: E731
    quarantine = lambda k: folder / f"shard-{k:05d}.quarantine.parquet"  # noqa: E731
    before = {p: p.stat().st_mtime_ns for p in folder.glob("shard-*")}

    shard(0).write_bytes(shard(0).read_bytes()[:-100])  # truncated: no Parquet footer
    quarantine(1).write_bytes(b"")  # its quarantine file emptied
    shard(2).write_bytes(foreign.read_bytes())  # copied in from another run
    pd.read_parquet(shard(3)).to_parquet(shard(3), index=False)  # rewritten without the stamp
    with pytest.raises(FileNotFoundError, match="4 of 4 detection shards are not finished") as err:
        merge_shards(folder, records, 2)
    assert "shard 0: shard-00000.parquet is unreadable or truncated" in str(err.value)
    assert "damaged shards are recomputed" in str(err.value)

    again = Counting(inner)
    with caplog.at_level("WARNING", logger="ica_captioning.detection.shards"):
        rerun = run_sharded(again, records, tmp_path / "a", shard_size=2, **SINGLE)
    assert again.seen == list(range(1, 9))  # all four shards detected again
    assert rerun["status"].tolist() == ["done"] * 4
    reasons = {
        0: "shard-00000.parquet is unreadable or truncated",
        1: "shard-00001.quarantine.parquet is unreadable or truncated",
        2: "shard-00002.parquet is written under other settings",
        3: "shard-00003.parquet is not stamped by a detection run",
    }
    messages = [r.getMessage() for r in caplog.records]
    for k, reason in reasons.items():
        assert any(
            m.startswith(f"detection shard {k} in {folder} is recomputed: {reason}")
            for m in messages
        ), (k, messages)
    assert all(p.stat().st_mtime_ns != t for p, t in before.items())
    detections, _ = merge_shards(folder, records, 2)
    pd.testing.assert_frame_equal(detections, reference)
    # Repaired: a further rerun skips every shard and logs no warning.
    caplog.clear()
    with caplog.at_level("WARNING", logger="ica_captioning.detection.shards"):
        last = run_sharded(Counting(inner), records, tmp_path / "a", shard_size=2, **SINGLE)
    assert last["status"].tolist() == ["skipped"] * 4 and not caplog.records
