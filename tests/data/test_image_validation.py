from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ica_captioning.data.images import inspect_image, load_rgb, validate_images
from ica_captioning.data.tables import DataQualityError, images_frame

RGB = np.zeros((12, 16, 3), dtype=np.uint8)
RGB[..., 0] = 200
RGB[4:8, 4:8] = (10, 20, 30)


def _png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _make_files(root: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, expected status or None for quarantine)."""
    files: dict[str, tuple[Path, str | None]] = {}

    def put(name: str, data: bytes, status: str | None) -> None:
        path = root / name
        path.write_bytes(data)
        files[name] = (path, status)

    rgb = Image.fromarray(RGB, "RGB")
    put("ok.png", _png_bytes(rgb), "ok")
    put("ok.jpg", _png_bytes(rgb, "JPEG"), "ok")
    put("grey.png", _png_bytes(rgb.convert("L")), "converted:L")
    rgba = Image.fromarray(np.dstack([RGB, np.full((12, 16), 255, np.uint8)]), "RGBA")
    put("rgba.png", _png_bytes(rgba), "converted:RGBA")
    put("cmyk.jpg", _png_bytes(rgb.convert("CMYK"), "JPEG"), "converted:CMYK")
    put("palette.png", _png_bytes(rgb.convert("P", palette=Image.Palette.ADAPTIVE)), "converted:P")
    put("wide.png", _png_bytes(Image.fromarray(RGB[..., 0].astype(np.uint16) * 257)), None)
    files["wide.png"] = (files["wide.png"][0], "converted:" + Image.open(files["wide.png"][0]).mode)
    put("empty.png", b"", None)
    full = _png_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    )
    put("truncated.png", full[: len(full) // 2], None)
    jpeg = _png_bytes(
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        "JPEG",
    )
    put("truncated.jpg", jpeg[: len(jpeg) // 3], None)
    put("garbage.png", b"this is not an image at all", None)
    (root / "folder.png").mkdir()
    files["folder.png"] = (root / "folder.png", None)
    files["missing.png"] = (root / "missing.png", None)
    return files


def test_inspect_image_classifies_every_kind_of_file(tmp_path):
    files = _make_files(tmp_path)
    reasons = {}
    for name, (path, status) in files.items():
        result = inspect_image(path)
        assert result["status"] == status, (name, result)
        assert result["ok"] == (status is not None)
        reasons[name] = result["reason"]
        if status is not None:
            assert (result["width"], result["height"]) == (16, 12)
    assert reasons["missing.png"] == "missing: file not found"
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["truncated.png"].startswith("truncated or corrupt")
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["garbage.png"] == "unreadable: not a recognised image file"
    assert reasons["folder.png"] == "unreadable: not a regular file"


def test_size_mismatch_with_the_annotation_is_quarantined(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(_png_bytes(Image.fromarray(RGB)))
    assert inspect_image(path, (16, 12))["ok"]
    result = inspect_image(path, (640, 480))
    assert not result["ok"] and result["reason"] == "image is 16x12 but the annotation says 640x480"


def test_load_rgb_converts_every_convertible_mode(tmp_path):
    files = _make_files(tmp_path)
    for name in ("ok.png", "grey.png", "rgba.png", "palette.png", "wide.png", "cmyk.jpg"):
        image = load_rgb(files[name][0])
        assert image.mode == "RGB" and image.size == (16, 12)
    assert np.array_equal(np.asarray(load_rgb(files["ok.png"][0])), RGB)
    assert np.array_equal(np.asarray(load_rgb(files["rgba.png"][0])), RGB)
    assert np.array_equal(np.asarray(load_rgb(files["palette.png"][0])), RGB)  # 2 colours: exact
    grey = np.asarray(load_rgb(files["wide.png"][0]))
    assert np.array_equal(grey[..., 0], RGB[..., 0]) and np.array_equal(grey[..., 1], RGB[..., 0])
    # Transparent pixels become white, not the colour hidden under alpha 0.
    alpha = np.dstack([RGB, np.zeros((12, 16), np.uint8)])
    path = tmp_path / "transparent.png"
    Image.fromarray(alpha, "RGBA").save(path)
    assert (np.asarray(load_rgb(path)) == 255).all()


#: Validation settings of the ceiling tests (the ceiling is each test's own).
CHECKS = {"num_workers": 2, "check_size": True, "progress": False}


def _table(files: dict[str, tuple[Path, str | None]]) -> pd.DataFrame:
    return images_frame(
        {"image_id": i, "file_path": name, "split": "train", "width": None, "height": None}
        for i, name in enumerate(files)
    )


def test_validate_images_keeps_converts_and_quarantines(tmp_path):
    files = _make_files(tmp_path)
    table = _table(files)
    images, quarantine = validate_images(
        table, tmp_path, num_workers=2, max_bad_fraction=1.0, check_size=True, progress=False
    )
    good = [name for name, (_, status) in files.items() if status is not None]
    bad = [name for name, (_, status) in files.items() if status is None]
    assert images["file_path"].tolist() == good
    assert images["status"].tolist() == [files[n][1] for n in good]
    assert (images["width"] == 16).all() and str(images["width"].dtype) == "int64"
    assert sorted(quarantine["file"]) == sorted(str(tmp_path / n) for n in bad)
    assert (quarantine["source"] == "image").all()
    ids = dict(zip(table["file_path"], table["image_id"]))
    assert sorted(quarantine["image_id"].tolist()) == sorted(ids[n] for n in bad)
    assert quarantine["reason"].notna().all()


def test_ceiling_stops_the_run_with_a_clear_error(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "ok.png")
    names = ["ok.png"] * 18 + ["missing.png"] * 2  # 10 % bad
    table = images_frame(
        {"image_id": i, "file_path": n, "split": "train", "width": None, "height": None}
        for i, n in enumerate(names)
    )
    with pytest.raises(DataQualityError, match=r"2 of 20 images \(10.0 %\)") as info:
        validate_images(table, tmp_path, **CHECKS, max_bad_fraction=0.05)
    assert "missing.png: missing: file not found" in str(info.value)
    images, quarantine = validate_images(table, tmp_path, **CHECKS, max_bad_fraction=0.1)
    assert len(images) == 18 and len(quarantine) == 2
