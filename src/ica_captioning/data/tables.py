"""Column layouts of the ingestion tables (docs/contracts.md) and small constructors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

IMAGE_COLUMNS = ("image_id", "file_path", "split", "width", "height", "status")
CAPTION_COLUMNS = ("caption_id", "image_id", "split", "raw", "tokens")
QUARANTINE_COLUMNS = ("source", "file", "record", "image_id", "reason")


class AnnotationError(ValueError):
    """An annotation file cannot be used; the message names the file and the record."""


class DataQualityError(RuntimeError):
    """Too many bad records (above the configured ceiling); the run stops."""


def quarantine_row(
    source: str, file: str, record: str, reason: str, image_id: int | None = None
) -> dict[str, Any]:
    """One ``quarantine`` row (``source``, ``file``, ``record``, ``image_id``, ``reason``)."""
    return {
        "source": source,
        "file": str(file),
        "record": str(record),
        "image_id": None if image_id is None else int(image_id),
        "reason": reason,
    }


def quarantine_frame(rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """The ``quarantine`` table from rows; ``image_id`` is nullable ``Int64``."""
    frame = pd.DataFrame(list(rows), columns=list(QUARANTINE_COLUMNS))
    for column in ("source", "file", "record", "reason"):
        frame[column] = frame[column].astype("string")
    frame["image_id"] = frame["image_id"].astype("Int64")
    return frame


def images_frame(rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """An ``images`` table (``status`` may still be missing before validation)."""
    frame = pd.DataFrame(list(rows), columns=list(IMAGE_COLUMNS))
    frame["image_id"] = frame["image_id"].astype("int64")
    for column in ("width", "height"):
        frame[column] = frame[column].astype("Int64")
    return frame


def captions_frame(rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """A ``captions`` table."""
    frame = pd.DataFrame(list(rows), columns=list(CAPTION_COLUMNS))
    for column in ("caption_id", "image_id"):
        frame[column] = frame[column].astype("int64")
    return frame


def check_ceiling(
    bad: int, total: int, max_fraction: float, what: str, examples: list[str]
) -> None:
    """Raise ``DataQualityError`` when ``bad / total`` exceeds ``max_fraction``.

    Args:
        bad: number of bad records.
        total: number of records checked.
        max_fraction: the ceiling (e.g. 0.05).
        what: what was counted, for the message ("images", "captions").
        examples: a few reasons, shown in the message.
    """
    if total == 0 or bad / total <= max_fraction:
        return
    shown = "\n  ".join(examples[:5])
    raise DataQualityError(
        f"{bad} of {total} {what} ({100 * bad / total:.1f} %) are bad, more than the ceiling "
        f"ingestion.max_bad_fraction={max_fraction} ({100 * max_fraction:g} %). "
        f"Fix the data or raise the ceiling. First problems:\n  {shown}"
    )
