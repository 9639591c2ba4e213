from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocotools.coco import COCO

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detection"))
from detmatch_harness import copy_project, run_pipeline, scope_of  # noqa: E402

from ica_captioning.matching import match_classes, unpack_grid  # noqa: E402
from ica_captioning.pipelines.detection import create_pipeline as detection  # noqa: E402
from ica_captioning.pipelines.matching import create_pipeline as matching  # noqa: E402

SMALL = {"ingestion": {"synthetic": {"num_images": 24, "image_size": 64}}}


def test_pipeline_shape():
    pipe = matching()
    assert pipe.inputs() == {"captions", "detections", "params:matching"}
    assert pipe.outputs() == {"pseudo_labels", "matching_stats"}


def reference_grid(mask: np.ndarray, g: int, threshold: float) -> np.ndarray:
    """Exact area fractions by sub-pixel blow-up, then threshold / best cell."""
    h, w = mask.shape
    big = np.kron(mask.astype(np.int64), np.ones((g, g), dtype=np.int64))
    frac = big.reshape(g, h, g, w).sum(axis=(1, 3)) / (h * w)
    grid = frac >= threshold
    if not grid.any() and frac.max() > 0:
        grid.flat[np.argmax(frac)] = True
    return grid


@pytest.mark.slow
def test_ingestion_detection_matching_on_the_embedded_dataset(tmp_path, monkeypatch):
    from ica_captioning.pipelines.ingestion import create_pipeline as ingestion

    project = copy_project(tmp_path)
    monkeypatch.chdir(project)
    params = SMALL | {"detection": {"progress": False}, "matching": {"progress": False}}
    run_pipeline(project, ingestion(), params)
    run_pipeline(project, detection(), params)
    run_pipeline(project, matching(), params)
    data, scope = project / "data", scope_of(project, params)
    captions = pd.read_parquet(data / "03_primary" / scope / "captions.parquet")
    detections = pd.read_parquet(data / "03_primary" / scope / "detections.parquet")
    pseudo = pd.read_parquet(data / "04_feature" / scope / "pseudo_labels.parquet")
    (stats_file,) = (data / "08_reporting" / scope / "matching_stats.parquet").rglob("*.parquet")
    stats = pd.read_parquet(stats_file)
    assert set(detections["image_id"]) == set(captions["image_id"])
    assert len(pseudo) > len(captions)  # most captions name two or more shapes

    # Every label against the ground truth: union of the class's annotated masks, reduced by an
    # independent exact reference.
    instances = sorted((data / "01_raw" / "synthetic" / "annotations").glob("instances_*.json"))
    cocos = [COCO(str(p)) for p in instances]
    tokens = captions.set_index("caption_id")["tokens"]
    for row in pseudo.sample(n=min(60, len(pseudo)), random_state=0).itertuples():
        coco = next(c for c in cocos if row.image_id in c.imgs)
        cat = next(c["id"] for c in coco.cats.values() if c["name"] == row.class_name)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[row.image_id], catIds=[cat]))
        union = np.max([coco.annToMask(a) for a in anns], axis=0)
        np.testing.assert_array_equal(unpack_grid(row.grid, 14), reference_grid(union, 14, 0.5))
        assert (row.token_position, row.class_name) in match_classes(
            list(tokens[row.caption_id]), {row.class_name}
        )

    value = stats.set_index(["statistic", "key"])["value"]
    assert value[("captions", "")] == len(captions)
    assert 1.0 < value[("mean_critical_objects_per_caption", "")] < 4.0
    assert value[("share_captions_with_match", "")] > 0.8
    assert value[("unmatched_mentions", "")] == 0  # ground-truth detector misses nothing
