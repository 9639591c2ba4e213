"""Readers for caption annotations: Karpathy split JSON and COCO captions JSON.

Both give the ``images`` (before validation: ``status`` empty) and ``captions`` tables of
docs/contracts.md plus ``quarantine`` rows for bad records. Structural problems (missing or
malformed file, no ``images`` list) raise ``AnnotationError`` naming the file; a bad record
(missing field, wrong type, duplicate or unknown id, empty caption) becomes a quarantine row
naming the file and the record's JSON pointer, or, with ``on_bad="raise"``, an
``AnnotationError`` naming both.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ica_captioning.data.tables import (
    AnnotationError,
    captions_frame,
    images_frame,
    quarantine_frame,
    quarantine_row,
)
from ica_captioning.data.text import tokenize

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
ON_BAD = ("quarantine", "raise")


def load_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; errors name the file (and line/column for malformed JSON)."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text ({exc})") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Collector:
    """Collects quarantine rows, or raises at the first one when ``on_bad == 'raise'``."""

    def __init__(self, file: str | os.PathLike, on_bad: str):
        if on_bad not in ON_BAD:
            raise ValueError(f"on_bad_annotation must be one of {ON_BAD}, got {on_bad!r}")
        self.file = str(file)
        self.on_bad = on_bad
        self.rows: list[dict[str, Any]] = []
        self.bad_images = 0
        self.bad_captions = 0

    def bad(self, record: str, reason: str, image_id: int | None = None, *, kind: str) -> None:
        if self.on_bad == "raise":
            raise AnnotationError(f"{self.file}: record {record}: {reason}")
        if kind == "image":
            self.bad_images += 1
        else:
            self.bad_captions += 1
        self.rows.append(quarantine_row("annotation", self.file, record, image_id, reason))


def _caption_tokens(raw: Any, tokens: Any) -> tuple[str, list[str]] | str:
    """(raw, tokens) of a caption, or the reason it is unusable."""
    if raw is not None and not isinstance(raw, str):
        return f"'raw' is {type(raw).__name__}, not a string"
    if tokens is not None and not (
        isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
    ):
        return "'tokens' is not a list of strings"
    if raw is None and tokens is None:
        return "missing field(s) 'raw' and 'tokens'"
    # Given tokens win (Karpathy's own); re-tokenising them is the identity for Karpathy tokens
    # and lower-cases / strips punctuation from tokens of other sources.
    words = tokenize(" ".join(tokens)) if tokens else tokenize(raw or "")
    if not words:
        return "empty caption"
    return (raw if raw is not None else " ".join(tokens)), words


def read_karpathy(
    path: str | os.PathLike, *, restval_split: str, on_bad: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Read a Karpathy split JSON (``dataset_flickr8k.json``, ``dataset_coco.json``, ...).

    Args:
        path: the JSON file.
        restval_split: split that ``restval`` images go to (``ingestion.restval_split``).
        on_bad: ``quarantine`` (bad records become quarantine rows) or ``raise``
            (``ingestion.on_bad_annotation``).

    Returns:
        ``(images, captions, quarantine, counts)``; ``images.file_path`` is
        ``filepath/filename`` (``filename`` alone where ``filepath`` is absent, as in Flickr);
        ``image_id`` is ``cocoid`` where present, else ``imgid``; ``width``/``height`` are null
        (validation reads them from the files). ``counts`` has the numbers of image and caption
        records read and found bad, for the ceiling.
    """
    if restval_split not in SPLIT_NAMES:
        raise ValueError(f"restval_split must be one of {SPLIT_NAMES}, got {restval_split!r}")
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(
            f"{path}: expected a JSON object with an 'images' list (Karpathy split format)"
        )
    bad = _Collector(path, on_bad)
    images: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    first_image: dict[int, str] = {}
    first_sentence: dict[int, str] = {}
    n_sentences = 0
    for k, record in enumerate(data["images"]):
        pointer = f"/images/{k}"
        if not isinstance(record, dict):
            bad.bad(pointer, "image record is not a JSON object", kind="image")
            continue
        cocoid = record.get("cocoid")
        imgid = record.get("imgid")
        image_id = cocoid if cocoid is not None else imgid
        missing = [f for f in ("filename", "split", "sentences") if f not in record]
        if image_id is None:
            missing.append("imgid/cocoid")
        if missing:
            bad.bad(pointer, f"missing field(s) {', '.join(missing)}", kind="image")
            n_sentences += len(record.get("sentences") or [])
            continue
        sentences = record["sentences"]
        n_sentences += len(sentences) if isinstance(sentences, list) else 0
        if not _is_int(image_id) or image_id < 0:
            bad.bad(pointer, f"image id {image_id!r} is not a non-negative integer", kind="image")
            continue
        if not isinstance(record["filename"], str) or not record["filename"]:
            bad.bad(pointer, "'filename' is not a non-empty string", image_id, kind="image")
            continue
        split = record["split"]
        split = restval_split if split == "restval" else split
        if split not in SPLIT_NAMES:
            bad.bad(pointer, f"unknown split {record['split']!r}", image_id, kind="image")
            continue
        if image_id in first_image:
            bad.bad(
                pointer,
                f"duplicate image id {image_id} (first at {first_image[image_id]})",
                image_id,
                kind="image",
            )
            continue
        if not isinstance(sentences, list):
            bad.bad(pointer, "'sentences' is not a list", image_id, kind="image")
            continue
        first_image[image_id] = pointer
        good = 0
        for m, sentence in enumerate(sentences):
            sp = f"{pointer}/sentences/{m}"
            if not isinstance(sentence, dict):
                bad.bad(sp, "sentence is not a JSON object", image_id, kind="caption")
                continue
            sentid = sentence.get("sentid")
            if not _is_int(sentid):
                bad.bad(
                    sp, f"missing or non-integer 'sentid' ({sentid!r})", image_id, kind="caption"
                )
                continue
            if "imgid" in sentence and imgid is not None and sentence["imgid"] != imgid:
                bad.bad(
                    sp,
                    f"sentence refers to unknown image imgid {sentence['imgid']!r} "
                    f"(its image has imgid {imgid!r})",
                    image_id,
                    kind="caption",
                )
                continue
            if sentid in first_sentence:
                bad.bad(
                    sp,
                    f"duplicate sentid {sentid} (first at {first_sentence[sentid]})",
                    image_id,
                    kind="caption",
                )
                continue
            parsed = _caption_tokens(sentence.get("raw"), sentence.get("tokens"))
            if isinstance(parsed, str):
                bad.bad(sp, parsed, image_id, kind="caption")
                continue
            first_sentence[sentid] = sp
            raw, words = parsed
            captions.append(
                {
                    "caption_id": sentid,
                    "image_id": image_id,
                    "split": split,
                    "raw": raw,
                    "tokens": words,
                }
            )
            good += 1
        if good == 0:
            bad.bad(pointer, "image has no usable caption", image_id, kind="image")
            continue
        filepath = record.get("filepath") or ""
        images.append(
            {
                "image_id": image_id,
                "file_path": str(PurePosixPath(filepath) / record["filename"]),
                "split": split,
                "width": None,
                "height": None,
                "status": None,
            }
        )
    keep = {row["image_id"] for row in images}
    captions = [c for c in captions if c["image_id"] in keep]
    counts = {
        "images": len(data["images"]),
        "bad_images": bad.bad_images,
        "captions": n_sentences,
        "bad_captions": bad.bad_captions,
    }
    return images_frame(images), captions_frame(captions), quarantine_frame(bad.rows), counts


def infer_split(path: str | os.PathLike) -> str:
    """Split named by a COCO captions file name (``captions_val2014.json`` -> ``val``)."""
    words = re.split(r"[^a-z]+", Path(path).stem.lower())
    for split in ("test", "val", "train"):
        if any(w == split or (w.startswith(split) and w != "restval") for w in words):
            return split
    raise AnnotationError(
        f"{path}: cannot tell the split from the file name; give dataset.annotations as a "
        "mapping {train: ..., val: ..., test: ...}"
    )


def coco_annotation_files(annotations: Any) -> dict[str, list[Path]]:
    """COCO captions files by split.

    Args:
        annotations: ``dataset.annotations``: a mapping ``{split: path or [paths]}``; a list of
            paths; a single file; a folder (its ``captions_*.json``); or a glob. Without a
            mapping the split comes from each file name (``train``/``val``/``test``).

    Returns:
        ``{split: [paths]}``.
    """
    if isinstance(annotations, Mapping):
        out: dict[str, list[Path]] = {}
        for split, paths in annotations.items():
            if split not in SPLIT_NAMES:
                raise AnnotationError(f"dataset.annotations: unknown split {split!r}")
            paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
            out[split] = [Path(p) for p in paths]
        return out
    if isinstance(annotations, str | os.PathLike):
        text = str(annotations)
        if any(ch in text for ch in "*?["):
            paths = sorted(glob.glob(text))
        elif Path(text).is_dir():
            paths = sorted(glob.glob(os.path.join(text, "captions_*.json")))
        else:
            paths = [text]
        if not paths:
            raise AnnotationError(f"{text}: no COCO captions files found")
    elif isinstance(annotations, Sequence):
        paths = list(annotations)
    else:
        raise AnnotationError(f"dataset.annotations: unsupported value {annotations!r}")
    out = {}
    for p in paths:
        out.setdefault(infer_split(p), []).append(Path(p))
    return out


def read_coco_captions(
    files: Mapping[str, Sequence[str | os.PathLike]],
    *,
    image_subdirs: Mapping[str, str] | None,
    on_bad: str,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Read COCO captions files (``captions_train2014.json`` ...).

    Args:
        files: ``{split: [paths]}`` (see ``coco_annotation_files``).
        image_subdirs: ``{split: folder}`` under ``dataset.images_dir`` holding the split's
            images (``file_name`` is relative to it; ``""``, missing or ``None``: ``images_dir``
            itself); ``ingestion.coco_image_subdirs``.
        on_bad: ``quarantine`` or ``raise`` (``ingestion.on_bad_annotation``).

    Returns:
        ``(images, captions, quarantine, counts)`` as ``read_karpathy``; ``width``/``height``
        come from the file (checked against the image by validation).
    """
    image_subdirs = dict(image_subdirs or {})
    images: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    counts = {"images": 0, "bad_images": 0, "captions": 0, "bad_captions": 0}
    first_image: dict[int, str] = {}
    first_caption: dict[int, str] = {}
    for split, paths in files.items():
        for path in paths:
            data = load_json(path)
            if not isinstance(data, dict):
                raise AnnotationError(f"{path}: expected a JSON object (COCO captions format)")
            for key in ("images", "annotations"):
                if not isinstance(data.get(key), list):
                    raise AnnotationError(
                        f"{path}: missing or non-list '{key}' (COCO captions format)"
                    )
            bad = _Collector(path, on_bad)
            here: dict[int, dict[str, Any]] = {}
            for k, record in enumerate(data["images"]):
                pointer = f"/images/{k}"
                if not isinstance(record, dict):
                    bad.bad(pointer, "image record is not a JSON object", kind="image")
                    continue
                missing = [f for f in ("id", "file_name") if f not in record]
                if missing:
                    bad.bad(pointer, f"missing field(s) {', '.join(missing)}", kind="image")
                    continue
                image_id = record["id"]
                if not _is_int(image_id) or image_id < 0:
                    bad.bad(
                        pointer,
                        f"image id {image_id!r} is not a non-negative integer",
                        kind="image",
                    )
                    continue
                if not isinstance(record["file_name"], str) or not record["file_name"]:
                    bad.bad(
                        pointer, "'file_name' is not a non-empty string", image_id, kind="image"
                    )
                    continue
                if image_id in first_image:
                    bad.bad(
                        pointer,
                        f"duplicate image id {image_id} (first at {first_image[image_id]})",
                        image_id,
                        kind="image",
                    )
                    continue
                first_image[image_id] = f"{path}#{pointer}"
                size = [record.get("width"), record.get("height")]
                size = [v if _is_int(v) else None for v in size]
                here[image_id] = {
                    "image_id": image_id,
                    "file_path": str(
                        PurePosixPath(image_subdirs.get(split) or "") / record["file_name"]
                    ),
                    "split": split,
                    "width": size[0],
                    "height": size[1],
                    "status": None,
                    "_pointer": pointer,
                    "_captions": 0,
                }
            for k, ann in enumerate(data["annotations"]):
                pointer = f"/annotations/{k}"
                if not isinstance(ann, dict):
                    bad.bad(pointer, "caption record is not a JSON object", kind="caption")
                    continue
                missing = [f for f in ("id", "image_id", "caption") if f not in ann]
                if missing:
                    bad.bad(
                        pointer,
                        f"missing field(s) {', '.join(missing)}",
                        ann.get("image_id") if _is_int(ann.get("image_id")) else None,
                        kind="caption",
                    )
                    continue
                cid, image_id = ann["id"], ann["image_id"]
                if not _is_int(cid) or not _is_int(image_id):
                    bad.bad(pointer, "'id' and 'image_id' must be integers", kind="caption")
                    continue
                if image_id not in here:
                    bad.bad(
                        pointer, f"caption refers to unknown image id {image_id}", kind="caption"
                    )
                    continue
                if cid in first_caption:
                    bad.bad(
                        pointer,
                        f"duplicate caption id {cid} (first at {first_caption[cid]})",
                        image_id,
                        kind="caption",
                    )
                    continue
                parsed = _caption_tokens(ann["caption"], None)
                if isinstance(parsed, str):
                    bad.bad(pointer, parsed, image_id, kind="caption")
                    continue
                first_caption[cid] = f"{path}#{pointer}"
                raw, words = parsed
                captions.append(
                    {
                        "caption_id": cid,
                        "image_id": image_id,
                        "split": split,
                        "raw": raw,
                        "tokens": words,
                    }
                )
                here[image_id]["_captions"] += 1
            for image_id, row in here.items():
                if row["_captions"] == 0:
                    bad.bad(row["_pointer"], "image has no usable caption", image_id, kind="image")
                    continue
                images.append({k: v for k, v in row.items() if not k.startswith("_")})
            rows += bad.rows
            counts["images"] += len(data["images"])
            counts["captions"] += len(data["annotations"])
            counts["bad_images"] += bad.bad_images
            counts["bad_captions"] += bad.bad_captions
    keep = {row["image_id"] for row in images}
    captions = [c for c in captions if c["image_id"] in keep]
    return images_frame(images), captions_frame(captions), quarantine_frame(rows), counts
