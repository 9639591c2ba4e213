from __future__ import annotations

import copy

import numpy as np
import pytest
from coco_toys import SIZES, compressed, rect, rewrite
from project_conf import section
from pycocotools.coco import COCO

from ica_captioning.detection import (
    DetectionConfigError,
    decode_masks,
    detections_frame,
    image_records,
    make_backend,
)
from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.params import DatasetParams, DetectionParams, ParameterError


def run(toy, include_crowd=True):
    backend = AnnotationsBackend(toy.instances, toy.images, include_crowd=include_crowd)
    results, bad = backend.detect(image_records(toy.images, toy.root))
    return backend, results, bad


def test_masks_boxes_and_classes_match_the_annotations(toy):
    backend, results, bad = run(toy)
    assert bad == [] and backend.preflight_quarantine() == []
    by_id = {r.image_id: r for r in results}
    assert set(by_id) == {1, 2, 3}
    r1 = by_id[1]
    assert r1.class_names == ["dog", "dog", "person"]
    np.testing.assert_array_equal(r1.scores, [1.0, 1.0, 1.0])
    h, w = SIZES[1]
    dense = decode_masks(r1.rle_counts, h, w)
    for k, aid in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(dense[k], toy.masks[(1, aid)])
    np.testing.assert_allclose(r1.boxes[0], [0, 0, 24, 16])
    np.testing.assert_allclose(r1.boxes[2], [30, 4, 46, 12])
    # Crowd region stored as uncompressed RLE.
    r2 = by_id[2]
    assert r2.class_names == ["teddy bear"]
    np.testing.assert_array_equal(decode_masks(r2.rle_counts, *SIZES[2])[0], toy.masks[(2, 4)])
    # Image without annotations: an empty result -> a "no_detections" row.
    assert by_id[3].class_names == []
    frame = detections_frame(results)
    row = frame[frame["image_id"] == 3].iloc[0]
    assert row["status"] == "no_detections" and row["instance_id"] == -1
    assert row["class_name"] is None and np.isnan(row["score"])
    assert (frame.loc[frame.image_id == 1, "instance_id"] == [0, 1, 2]).all()


def test_masks_agree_with_pycocotools_ann_to_mask(toy):
    coco = COCO(str(toy.instances))
    _, results, _ = run(toy)
    by_id = {r.image_id: r for r in results}
    for iid in (1, 2):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[iid]))
        ref = np.stack([coco.annToMask(a) for a in anns])
        np.testing.assert_array_equal(decode_masks(by_id[iid].rle_counts, *SIZES[iid]), ref)


def test_crowd_regions_can_be_excluded(toy):
    _, results, _ = run(toy, include_crowd=False)
    assert {r.image_id: r.class_names for r in results}[2] == []


def test_categories_in_id_order(toy):
    backend, _, _ = run(toy)
    assert backend.categories == ["person", "dog", "teddy bear", "circle"]


def _bad_data(toy):
    data = copy.deepcopy(toy.data)
    h, w = SIZES[1]
    m = rect(h, w, 1, 3, 1, 3)
    base = {"category_id": 1, "area": 4.0, "bbox": [1, 1, 2, 2], "iscrowd": 0}
    data["annotations"] += [
        {"id": 50, "image_id": 999, "segmentation": compressed(m)} | base,  # unknown image
        {"id": 51, "image_id": 1, "segmentation": compressed(m)} | base | {"category_id": 7},
        {"id": 52, "image_id": 1, "segmentation": compressed(rect(10, 10, 0, 2, 0, 2))} | base,
        {"id": 53, "image_id": 1, "segmentation": [[1, 2, 3, 4]]} | base,  # 2 vertices
        {"id": 54, "image_id": 1, "segmentation": {"size": [h, w], "counts": "0 1"}} | base,
        {"id": 55, "image_id": 1, "segmentation": compressed(np.zeros((h, w), np.uint8))} | base,
        {"id": 56, "image_id": 1} | base,  # no segmentation at all
    ]
    return data


def test_every_bad_annotation_becomes_a_quarantine_row(toy):
    rewrite(toy, _bad_data(toy))
    backend, results, bad = run(toy)
    pre = {q["record"]: q for q in backend.preflight_quarantine()}
    later = {q["record"]: q for q in bad}
    assert set(pre) == {"annotations[4] (id 50)", "annotations[5] (id 51)"}
    assert "unknown image_id 999" in pre["annotations[4] (id 50)"]["reason"]
    assert pre["annotations[4] (id 50)"]["file"] == str(toy.instances)
    assert "unknown category_id 7" in pre["annotations[5] (id 51)"]["reason"]
    reasons = {k: v["reason"] for k, v in later.items()}
    assert "mask size 10x10 disagrees with image size 32x48" in reasons["annotations[6] (id 52)"]
    assert "invalid polygon" in reasons["annotations[7] (id 53)"]
    assert "does not decode to 32x48" in reasons["annotations[8] (id 54)"]
    assert "covers no pixel" in reasons["annotations[9] (id 55)"]
    assert "segmentation missing" in reasons["annotations[10] (id 56)"]
    assert all(q["source"] == "annotation" and q["image_id"] == 1 for q in bad)
    # The good annotations of image 1 are still there.
    assert {r.image_id: r.class_names for r in results}[1] == ["dog", "dog", "person"]


def test_image_size_in_instances_file_disagreeing_with_images_table(toy):
    data = copy.deepcopy(toy.data)
    data["images"][1]["height"] = 41  # image 2 is 40x40 in the images table
    rewrite(toy, data)
    backend, results, _ = run(toy)
    (row,) = backend.preflight_quarantine()
    assert row["image_id"] == 2 and "41x40" in row["reason"] and "40x40" in row["reason"]
    assert {r.image_id: r.class_names for r in results}[2] == []


def test_missing_or_malformed_files_raise(toy, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        AnnotationsBackend(tmp_path / "nope.json", toy.images, include_crowd=True)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DetectionConfigError, match="not valid JSON"):
        AnnotationsBackend(bad, toy.images, include_crowd=True)
    bad.write_text('{"images": []}')
    with pytest.raises(DetectionConfigError, match="'annotations' list missing"):
        AnnotationsBackend(bad, toy.images, include_crowd=True)
    detection = DetectionParams.parse(section("detection", backend="annotations"), "detection")
    no_instances = DatasetParams.parse(section("dataset", instances=None), "dataset")
    with_instances = DatasetParams.parse(
        section("dataset", instances=str(toy.instances)), "dataset"
    )
    built = make_backend(detection, with_instances, toy.images)
    assert isinstance(built, AnnotationsBackend) and built.include_crowd == detection.include_crowd
    assert built.batch_size == max(64, detection.batch_size)
    with pytest.raises(DetectionConfigError, match="dataset.instances"):
        make_backend(detection, no_instances, toy.images)
    # An unknown backend stops at the parameters, by full key name ...
    with pytest.raises(ParameterError, match="detection.backend"):
        DetectionParams.parse(section("detection", backend="yolo"), "detection")
    # ... and make_backend still refuses a params object that skipped validation.
    unchecked = detection.model_copy(update={"backend": "yolo"})
    with pytest.raises(DetectionConfigError, match="not one of"):
        make_backend(unchecked, no_instances, toy.images)


def test_conflicting_category_names_across_files_raise(toy, tmp_path):
    other = tmp_path / "other.json"
    data = copy.deepcopy(toy.data)
    data["categories"][0]["name"] = "human"
    other.write_text(__import__("json").dumps(data))
    with pytest.raises(DetectionConfigError, match="category id 1 is 'human'"):
        AnnotationsBackend([toy.instances, other], toy.images, include_crowd=True)


def test_instances_of_another_dataset_stop_with_both_sides_ids(toy, tmp_path):
    # A Flickr-style images table with COCO's instances file: no image id in common. Before,
    # this ran to the end with only "no_detections" rows.
    data = copy.deepcopy(toy.data)
    for ann in data["annotations"]:
        ann["image_id"] += 100
    for img in data["images"]:
        img["id"] += 100
    rewrite(toy, data)
    with pytest.raises(DetectionConfigError) as err:
        AnnotationsBackend(toy.instances, toy.images, include_crowd=True)
    text = str(err.value)
    assert "none of the images of the images table has an annotation" in text
    assert "images 1, 2, 3;" in text
    assert f"instances file {toy.instances} has annotations for image ids 101, 102" in text
    # A second, empty file is named as such; the factory path fails the same way.
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DetectionConfigError, match=f"instances file {empty} has no annotation"):
        AnnotationsBackend([toy.instances, empty], toy.images, include_crowd=True)
    detection = DetectionParams.parse(section("detection", backend="annotations"), "detection")
    dataset = DatasetParams.parse(section("dataset", instances=str(toy.instances)), "dataset")
    with pytest.raises(DetectionConfigError, match="none of the images"):
        make_backend(detection, dataset, toy.images)


def test_images_in_no_instances_file_are_warned_about(toy, caplog):
    # Image 3 is listed in the file without annotations (a COCO image with no object): fine,
    # no warning. Dropping it from the file's images list (as when one split's file is missing)
    # leaves 2 of 3 images that appear in dataset.instances: a warning with the share.
    with caplog.at_level("WARNING", logger="ica_captioning.detection.annotations"):
        run(toy)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    data = copy.deepcopy(toy.data)
    data["images"] = [img for img in data["images"] if img["id"] != 3]
    rewrite(toy, data)
    caplog.clear()
    with caplog.at_level("WARNING", logger="ica_captioning.detection.annotations"):
        _, results, _ = run(toy)
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "only 2 of the 3 images of the images table (66.7%)" in warning.getMessage()
    assert "(image ids 3)" in warning.getMessage()
    assert {r.image_id: r.class_names for r in results}[3] == []  # still a no_detections image
