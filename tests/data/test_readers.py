from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from project_conf import section

from ica_captioning.data.readers import (
    coco_annotation_files,
    infer_split,
    read_coco_captions,
    read_karpathy,
)
from ica_captioning.data.tables import AnnotationError, DataQualityError
from ica_captioning.pipelines.ingestion.nodes import read_annotations

SUBDIRS = {"train": "images", "val": "images", "test": "images"}
#: Reader settings of most tests: restval images go to train, bad records are quarantined.
KARPATHY = {"restval_split": "train", "on_bad": "quarantine"}


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _karpathy_record(imgid, sentences, **extra):
    return {
        "filename": f"{imgid}.jpg",
        "imgid": imgid,
        "split": "train",
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
        **extra,
    }


def _sentence(sentid, imgid, raw, tokens=None):
    s = {"sentid": sentid, "imgid": imgid, "raw": raw}
    if tokens is not None:
        s["tokens"] = tokens
    return s


def test_karpathy_reader_on_the_generated_set(small_dataset):
    out, _ = small_dataset
    images, captions, quarantine, counts = read_karpathy(out / "dataset_synthetic.json", **KARPATHY)
    raw = json.loads((out / "dataset_synthetic.json").read_text())["images"]
    assert quarantine.empty
    assert counts == {"images": 30, "bad_images": 0, "captions": 150, "bad_captions": 0}
    assert images["image_id"].tolist() == [im["cocoid"] for im in raw]  # cocoid wins over imgid
    assert images["file_path"].tolist() == [f"images/{im['filename']}" for im in raw]
    assert images["split"].value_counts().to_dict() == {"train": 24, "val": 3, "test": 3}
    assert len(captions) == 150
    first = raw[0]["sentences"][0]
    row = captions.iloc[0]
    assert (row.caption_id, row.image_id, row.raw) == (
        first["sentid"],
        raw[0]["cocoid"],
        first["raw"],
    )
    assert list(row.tokens) == first["tokens"]
    assert str(images["image_id"].dtype) == "int64" and str(captions["caption_id"].dtype) == "int64"


def test_coco_reader_gives_the_same_tables_as_the_karpathy_reader(small_dataset):
    out, _ = small_dataset
    k_images, k_captions, _, _ = read_karpathy(out / "dataset_synthetic.json", **KARPATHY)
    files = coco_annotation_files(str(out / "annotations" / "captions_*.json"))
    assert set(files) == {"train", "val", "test"}
    c_images, c_captions, quarantine, _ = read_coco_captions(
        files, image_subdirs=SUBDIRS, on_bad="quarantine"
    )
    assert quarantine.empty
    key = ["image_id"]
    pd.testing.assert_frame_equal(
        c_images.sort_values(key).reset_index(drop=True)[["image_id", "file_path", "split"]],
        k_images.sort_values(key).reset_index(drop=True)[["image_id", "file_path", "split"]],
    )
    assert (c_images["width"] == 64).all()
    c = c_captions.sort_values("caption_id").reset_index(drop=True)
    k = k_captions.sort_values("caption_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(c, k)


def test_karpathy_flickr_layout_uses_imgid_and_maps_restval(tmp_path):
    records = [
        _karpathy_record(0, [_sentence(0, 0, "A dog runs.", ["a", "dog", "runs"])]),
        _karpathy_record(1, [_sentence(1, 1, "Two cats!", None)], split="restval"),
    ]
    path = _write(tmp_path / "dataset_flickr8k.json", {"images": records, "dataset": "flickr8k"})
    images, captions, _, _ = read_karpathy(path, **KARPATHY)
    assert images["image_id"].tolist() == [0, 1]
    assert images["file_path"].tolist() == ["0.jpg", "1.jpg"]  # no filepath in Flickr files
    assert images["split"].tolist() == ["train", "train"]
    assert list(captions.iloc[1].tokens) == ["two", "cats"]  # tokenised from raw
    images, _, _, _ = read_karpathy(path, restval_split="val", on_bad="quarantine")
    assert images["split"].tolist() == ["train", "val"]


def test_non_ascii_text_survives(tmp_path):
    raw = "Ein Café — naïve “Ünïcödé” 猫, à côté!"
    records = [_karpathy_record(0, [_sentence(5, 0, raw)])]
    path = _write(tmp_path / "k.json", {"images": records})
    _, captions, _, _ = read_karpathy(path, **KARPATHY)
    assert captions.iloc[0].raw == raw
    assert list(captions.iloc[0].tokens) == ["ein", "café", "naïve", "ünïcödé", "猫", "à", "côté"]
    coco = {
        "images": [{"id": 9, "file_name": "x.jpg"}],
        "annotations": [{"id": 1, "image_id": 9, "caption": raw}],
    }
    cpath = _write(tmp_path / "captions_val.json", coco)
    _, c_captions, _, _ = read_coco_captions(
        {"val": [cpath]}, image_subdirs=None, on_bad="quarantine"
    )
    assert c_captions.iloc[0].raw == raw and list(c_captions.iloc[0].tokens) == list(
        captions.iloc[0].tokens
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"images": [', "malformed JSON at line 1"),
        ("[]", "'images' list"),
        ("{}", "'images' list"),
    ],
)
def test_unusable_karpathy_files_raise_naming_the_file(tmp_path, text, message):
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=message) as info:
        read_karpathy(path, **KARPATHY)
    assert str(path) in str(info.value)


def test_missing_annotation_file_raises(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_karpathy(tmp_path / "nope.json", **KARPATHY)
    with pytest.raises(AnnotationError, match="no COCO captions files"):
        coco_annotation_files(str(tmp_path / "captions_*.json"))


def _bad_karpathy(tmp_path: Path) -> Path:
    good = [_sentence(10 + i, i, f"a shape number {i}") for i in range(6)]
    records = [_karpathy_record(i, [good[i]]) for i in range(6)]
    records[1].pop("filename")  # missing field
    records[2]["imgid"] = 0  # duplicate image id
    records[2]["sentences"][0]["imgid"] = 0
    records[3]["sentences"].append(_sentence(13, 3, "dup id"))  # duplicate sentid
    records[3]["sentences"].append(_sentence(12, 3, " ... "))  # empty caption
    records[4]["sentences"][0]["imgid"] = 99  # unknown imgid -> image left without captions
    records[5]["split"] = "holdout"  # unknown split
    records.append("not an object")
    return _write(tmp_path / "bad.json", {"images": records})


def test_bad_karpathy_records_are_quarantined_with_file_and_record(tmp_path):
    path = _bad_karpathy(tmp_path)
    images, captions, quarantine, counts = read_karpathy(path, **KARPATHY)
    assert images["image_id"].tolist() == [0, 3]
    assert sorted(captions["caption_id"]) == [10, 13]
    assert (quarantine["file"] == str(path)).all()
    reasons = dict(zip(quarantine["record"], quarantine["reason"]))
    assert reasons["/images/1"] == "missing field(s) filename"
    assert reasons["/images/2"] == "duplicate image id 0 (first at /images/0)"
    assert (
        reasons["/images/3/sentences/1"] == "duplicate sentid 13 (first at /images/3/sentences/0)"
    )
    assert reasons["/images/3/sentences/2"] == "empty caption"
    assert "unknown image imgid 99" in reasons["/images/4/sentences/0"]
    assert reasons["/images/4"] == "image has no usable caption"
    assert reasons["/images/5"] == "unknown split 'holdout'"
    assert reasons["/images/6"] == "image record is not a JSON object"
    assert quarantine.set_index("record").loc["/images/3/sentences/2", "image_id"] == 3
    assert counts["bad_images"] == 5 and counts["bad_captions"] == 3


def test_bad_record_raises_in_raise_mode(tmp_path):
    path = _bad_karpathy(tmp_path)
    with pytest.raises(AnnotationError) as info:
        read_karpathy(path, restval_split="train", on_bad="raise")
    assert str(path) in str(info.value) and "/images/1" in str(info.value)
    assert "missing field(s) filename" in str(info.value)


def test_bad_coco_records_are_quarantined(tmp_path):
    data = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 10, "height": 10},
            {"id": 1, "file_name": "b.jpg"},  # duplicate id
            {"file_name": "c.jpg"},  # missing id
            {"id": 4, "file_name": "d.jpg"},  # every caption bad -> no usable caption
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "caption": "A red circle."},
            {"id": 1, "image_id": 1, "caption": "Duplicate id."},
            {"id": 2, "image_id": 77, "caption": "Unknown image."},
            {"id": 3, "image_id": 4, "caption": "   "},
            {"id": 5, "image_id": 1},
        ],
    }
    path = _write(tmp_path / "captions_train2014.json", data)
    images, captions, quarantine, counts = read_coco_captions(
        coco_annotation_files(str(path)), image_subdirs={"train": "train2014"}, on_bad="quarantine"
    )
    assert images["file_path"].tolist() == ["train2014/a.jpg"]
    assert captions["caption_id"].tolist() == [1]
    reasons = dict(zip(quarantine["record"], quarantine["reason"]))
    assert reasons == {
        "/images/1": "duplicate image id 1 (first at " + f"{path}#/images/0)",
        "/images/2": "missing field(s) id",
        "/annotations/1": "duplicate caption id 1 (first at " + f"{path}#/annotations/0)",
        "/annotations/2": "caption refers to unknown image id 77",
        "/annotations/3": "empty caption",
        "/annotations/4": "missing field(s) caption",
        "/images/3": "image has no usable caption",
    }
    assert counts == {"images": 4, "bad_images": 3, "captions": 5, "bad_captions": 4}


def test_coco_file_without_annotations_list_raises(tmp_path):
    path = _write(tmp_path / "captions_val.json", {"images": []})
    with pytest.raises(AnnotationError, match="'annotations'"):
        read_coco_captions({"val": [path]}, image_subdirs=None, on_bad="quarantine")


def test_split_inference_from_coco_file_names(tmp_path):
    assert infer_split("captions_val2014.json") == "val"
    assert infer_split("annotations/captions_train2017.json") == "train"
    assert infer_split("captions_test.json") == "test"
    with pytest.raises(AnnotationError, match="cannot tell the split"):
        infer_split("captions_all.json")
    assert coco_annotation_files({"val": "x.json", "test": ["y.json"]}) == {
        "val": [Path("x.json")],
        "test": [Path("y.json")],
    }


def test_read_annotations_node_applies_the_ceiling(tmp_path):
    path = _bad_karpathy(tmp_path)
    # ``name`` is ``section``'s own argument, so the dataset keys are set on its result.
    dataset = section("dataset") | {
        "name": "flickr8k",
        "format": "karpathy",
        "annotations": str(path),
        "images_dir": ".",
    }
    raw = {"name": "flickr8k"}
    with pytest.raises(DataQualityError, match="image records") as info:
        read_annotations(raw, dataset, section("ingestion", max_bad_fraction=0.05))
    assert "/images/1" in str(info.value)
    images, _, quarantine = read_annotations(
        raw, dataset, section("ingestion", max_bad_fraction=0.9)
    )
    assert len(images) == 2 and len(quarantine) == 8


def test_read_annotations_node_reads_coco_format(small_dataset):
    out, _ = small_dataset
    dataset = section("dataset") | {
        "name": "synthetic",
        "format": "coco",
        "annotations": str(out / "annotations"),  # a folder: its captions_*.json
        "images_dir": str(out),
    }
    ingestion = section("ingestion", coco_image_subdirs=SUBDIRS)
    images, captions, quarantine = read_annotations({"name": "synthetic"}, dataset, ingestion)
    assert len(images) == 30 and len(captions) == 150 and quarantine.empty
    with pytest.raises(ValueError, match="dataset.format"):
        read_annotations({}, {**dataset, "format": "yaml"}, ingestion)
    # Every parameter comes from conf: a partial section is an error naming the missing key.
    with pytest.raises(ValueError, match="ingestion.restval_split: missing"):
        read_annotations({}, dataset, {"coco_image_subdirs": SUBDIRS})
