"""Column layouts of the tables (docs/contracts.md), their constructors and checks.

The ``quarantine`` table is shared by every stage that can reject a record (ingestion's
annotation and image checks, detection's image decoding), so its row and frame constructors live
here, once, and every stage writes the same columns with the same dtypes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

IMAGE_COLUMNS = ("image_id", "file_path", "split", "width", "height", "status")
CAPTION_COLUMNS = ("caption_id", "image_id", "split", "raw", "tokens")
QUARANTINE_COLUMNS = ("source", "file", "record", "image_id", "reason")


class AnnotationError(ValueError):
    """An annotation file cannot be used; the message names the file and the record."""


class DataQualityError(RuntimeError):
    """Too many bad records (above the configured ceiling); the run stops."""


class MissingColumnsError(ValueError):
    """A table lacks columns that its consumer needs (the message names table and columns)."""


def require_columns(
    frame: pd.DataFrame,
    name: str,
    columns: Sequence[str],
    *,
    error: type[ValueError] = MissingColumnsError,
) -> None:
    """Check that a table has the columns a stage reads, before anything else fails obscurely.

    Args:
        frame: the table.
        name: its catalog name (``images``, ``detections`` ...), for the message.
        columns: the columns the caller reads.
        error: the exception raised (a stage may raise its own input error type).

    Raises:
        MissingColumnsError: (or ``error``) naming the table, the missing columns and the
            columns it has.
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(
            f"{name} table lacks column(s) {missing}; it has {list(frame.columns)} "
            "(see docs/contracts.md)"
        )


def quarantine_row(
    source: str, file: str, record: str, image_id: int | None, reason: str
) -> dict[str, Any]:
    """One row of the ``quarantine`` table, in the table's column order.

    Args:
        source: the stage that rejected the record (``annotation``, ``image``, ``detection``).
        file: the file the record came from (any path-like is stored as its string).
        record: the record's id or JSON pointer within ``file``.
        image_id: the image concerned, ``None`` when the record names no usable image.
        reason: why the record was rejected, in words.

    Returns:
        ``{"source", "file", "record", "image_id", "reason"}``.
    """
    return {
        "source": source,
        "file": str(file),
        "record": str(record),
        "image_id": None if image_id is None else int(image_id),
        "reason": reason,
    }


def quarantine_frame(rows: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """The ``quarantine`` table (docs/contracts.md) from rows, also when there are none.

    Text columns are pandas ``string`` and ``image_id`` is nullable ``Int64``, whichever stage
    built the rows, so quarantine tables of different stages concatenate and compare equal.

    Args:
        rows: mappings with the keys of :func:`quarantine_row`.

    Returns:
        The table, columns in :data:`QUARANTINE_COLUMNS` order.
    """
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
