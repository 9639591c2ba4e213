from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from detmatch_harness import PROJECT, copy_project, load_config, run_pipeline, scope_of

from ica_captioning.detection import detections_frame, image_records
from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.pipelines.detection import create_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "detection"))
from coco_toys import build_toy  # noqa: E402


def test_configuration_base_and_gpu():
    _, base = load_config(PROJECT)
    det = base["detection"]
    assert det["backend"] == "annotations" and det["device"] == "cpu"
    assert det["shard_index"] == 0 and det["num_shards"] == 1 and det["shard_size"] == 512
    assert base["matching"] == {
        "score_threshold": 0.5,
        "grid_size": 14,
        "cell_threshold": 0.5,
        "extra_lexicon": {},
        "progress": True,
        "allow_empty": False,
        "min_labelled_fraction": 0.5,
    }
    catalog, gpu = load_config(PROJECT, env="gpu")
    g = gpu["detection"]
    assert g["backend"] == "detectron2" and g["device"] == "cuda"
    assert g["detectron2"]["config"] == "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml"
    assert g["shard_size"] == 512 and g["torchvision"]["model"] == "maskrcnn_resnet50_fpn"
    for name in ("detections", "detection_quarantine", "pseudo_labels", "matching_stats"):
        assert catalog[name]["type"] == "pandas.ParquetDataset"


def test_pipeline_shape():
    pipe = create_pipeline()
    assert pipe.inputs() == {"images", "params:dataset", "params:detection"}
    assert pipe.outputs() == {"detections", "detection_quarantine"}
    assert {n.name for n in pipe.nodes} == {"detect_shards", "merge_detection_shards"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = copy_project(tmp_path / "project")
    monkeypatch.chdir(root)
    return root


def test_detection_pipeline_writes_detections_and_resumes(project, tmp_path):
    toy = build_toy(tmp_path / "toy")
    params = {
        "dataset": {"images_dir": str(toy.root), "instances": [str(toy.instances)]},
        "detection": {"shard_size": 2, "progress": False},
    }
    scope = scope_of(project, params)
    images_file = project / "data" / "03_primary" / scope / "images.parquet"
    images_file.parent.mkdir(parents=True)
    toy.images.to_parquet(images_file)
    run_pipeline(project, create_pipeline(), params)
    out = project / "data" / "03_primary" / scope / "detections.parquet"
    detections = pd.read_parquet(out)
    results, _ = AnnotationsBackend(toy.instances, toy.images, include_crowd=True).detect(
        image_records(toy.images, toy.root)
    )
    expected = detections_frame(results)

    def plain(frame):
        frame = frame.drop(columns="box").astype(object)
        return frame.where(frame.notna(), None)

    pd.testing.assert_frame_equal(plain(detections), plain(expected))
    assert [list(b) for b in detections["box"].dropna()] == expected["box"].dropna().tolist()
    assert detections["status"].tolist() == ["ok"] * 4 + ["no_detections"]
    quarantine = pd.read_parquet(
        project / "data" / "03_primary" / scope / "detection_quarantine.parquet"
    )
    assert quarantine.empty and list(quarantine.columns) == [
        "source",
        "file",
        "record",
        "image_id",
        "reason",
    ]
    shards = sorted((project / "data" / "02_intermediate" / "detection_shards").rglob("shard-*"))
    assert len(shards) == 4  # 2 shards × (detections + quarantine)
    mtimes = [p.stat().st_mtime_ns for p in shards]
    run_pipeline(project, create_pipeline(), params)  # nothing left to do: shards untouched
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
    pd.testing.assert_frame_equal(pd.read_parquet(out), detections)
