"""Sharded, resumable detection runs and the merge into the ``detections`` table.

Images (sorted by ``image_id``) are cut into shards of ``shard_size``. Each shard is written as
``shard-NNNNN.parquet`` (detections) plus ``shard-NNNNN.quarantine.parquet`` as soon as it is
finished, atomically (temp file + rename), so a killed run leaves only complete shards and a
rerun skips them. Shard ``k`` belongs to process ``k % num_shards``, so several GPUs or machines
(``detection.shard_index`` / ``detection.num_shards``) can share the work; :func:`merge_shards`
then checks that every shard exists and concatenates them.

Shards live in ``<shards_dir>/<backend>-<fingerprint>/``: the fingerprint hashes everything that
changes the output (backend settings, images table, shard size), so changing a setting starts a
fresh folder instead of silently mixing old and new detections. Every shard file also carries a
stamp in its Parquet metadata (the run fingerprint and its own file name): a rerun recomputes a
shard whose file is unreadable (truncated), unstamped or stamped by another run (a file copied
in, written under other settings), and logs why; :func:`merge_shards` refuses such a shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ica_captioning.data.tables import quarantine_frame, quarantine_row
from ica_captioning.detection.base import (
    DetectionConfigError,
    DetectorBackend,
    ImageRecord,
    detections_frame,
)

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:05d}.parquet"
QUARANTINE_PATTERN = "shard-{:05d}.quarantine.parquet"
PREFLIGHT = "preflight.quarantine.parquet"
#: Parquet metadata key of a shard file's stamp: ``{"run": fingerprint, "file": file name}``.
STAMP_KEY = b"ica_captioning.detection_shard"


def _atomic_parquet(frame: pd.DataFrame, path: Path, run: str) -> None:
    """Write stamped Parquet so that ``path`` exists only when complete (a kill leaves a temp).

    The stamp (:data:`STAMP_KEY`) names the run fingerprint and the file, so a file copied in
    from another run or written under other settings is recognised (:func:`shard_file_problem`).
    """
    table = pa.Table.from_pandas(frame, preserve_index=False)
    stamp = json.dumps({"run": run, "file": path.name}).encode("utf-8")
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), STAMP_KEY: stamp})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def shard_file_problem(path: Path, run: str) -> str | None:
    """Why an existing shard file cannot be used by run ``run``, or None when it can.

    Reads only the Parquet footer: a truncated file has none and is reported unreadable.
    """
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as err:  # noqa: BLE001 - any failure to read it makes it unusable
        return f"unreadable or truncated ({type(err).__name__}: {str(err)[:200]})"
    raw = metadata.get(STAMP_KEY)
    if raw is None:
        return "not stamped by a detection run (written by another version or tool)"
    try:
        stamp = json.loads(raw)
    except ValueError:
        return f"its stamp is unreadable ({raw[:80]!r})"
    expected = {"run": run, "file": path.name}
    if stamp != expected:
        return (
            f"written under other settings or for another file (stamp {stamp}, expected {expected})"
        )
    return None


def shard_problem(folder: Path, k: int, run: str) -> str | None:
    """Why finished shard ``k`` of run ``run`` cannot be used (None: it can; "missing": not there).

    A shard is finished when its detections file exists (it is written last); both of its files
    must then be readable and stamped by this run.
    """
    det = folder / SHARD_PATTERN.format(k)
    if not det.exists():
        return "missing"
    for path in (det, folder / QUARANTINE_PATTERN.format(k)):
        if not path.exists():
            return f"{path.name} is missing"
        problem = shard_file_problem(path, run)
        if problem is not None:
            return f"{path.name} is {problem}"
    return None


def run_fingerprint(
    backend: DetectorBackend, records: Sequence[ImageRecord], shard_size: int
) -> str:
    """Short hash of the backend settings, the images and the shard size."""
    payload = {
        "backend": backend.fingerprint(),
        "shard_size": int(shard_size),
        "images": [(r.image_id, r.file_path, r.width, r.height) for r in records],
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:12]


def run_dir(
    shards_dir: str | Path,
    backend: DetectorBackend,
    records: Sequence[ImageRecord],
    shard_size: int,
) -> Path:
    """Folder of the shards of this configuration."""
    return Path(shards_dir) / f"{backend.name}-{run_fingerprint(backend, records, shard_size)}"


def _folder_fingerprint(folder: Path) -> str:
    """The run fingerprint in a run folder's name (``<backend>-<fingerprint>``, :func:`run_dir`)."""
    return folder.name.rpartition("-")[2]


def _check_sharding(shard_size: int, shard_index: int, num_shards: int) -> None:
    if int(shard_size) < 1:
        raise DetectionConfigError(f"detection.shard_size={shard_size} must be >= 1")
    if int(num_shards) < 1:
        raise DetectionConfigError(f"detection.num_shards={num_shards} must be >= 1")
    if not 0 <= int(shard_index) < int(num_shards):
        raise DetectionConfigError(
            f"detection.shard_index={shard_index} must be in [0, detection.num_shards={num_shards})"
        )


def run_sharded(
    backend: DetectorBackend,
    records: Sequence[ImageRecord],
    shards_dir: str | Path,
    *,
    shard_size: int,
    shard_index: int,
    num_shards: int,
    progress: bool,
) -> pd.DataFrame:
    """Detect on this process's shards, skipping shards already written.

    Args:
        backend: the detector.
        records: all images of the run, sorted by ``image_id`` (every process gets the same list).
        shards_dir: parent folder of the run folder.
        shard_size: images per shard.
        shard_index: this process's index in ``[0, num_shards)``.
        num_shards: number of processes sharing the shards.
        progress: show a tqdm bar (images/s).

    Returns:
        One row per shard of this process: ``shard``, ``path``, ``num_images``, ``status``
        (``done`` = computed now, ``skipped`` = found finished), ``seconds``, ``run_dir``.
    """
    _check_sharding(shard_size, shard_index, num_shards)
    folder = run_dir(shards_dir, backend, records, shard_size)
    run = _folder_fingerprint(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {"backend": backend.fingerprint(), "shard_size": shard_size, "images": len(records)},
            indent=2,
            default=str,
        )
    )
    preflight = folder / PREFLIGHT
    problem = shard_file_problem(preflight, run) if preflight.exists() else None
    if problem is not None:
        logger.warning("detection preflight file %s is %s: writing it again", preflight, problem)
    if not preflight.exists() or problem is not None:
        _atomic_parquet(quarantine_frame(backend.preflight_quarantine()), preflight, run)
    total = -(-len(records) // shard_size)
    mine = [k for k in range(total) if k % num_shards == shard_index]
    todo = []
    for k in mine:
        problem = shard_problem(folder, k, run)
        if problem not in (None, "missing"):
            logger.warning("detection shard %d in %s is recomputed: %s", k, folder, problem)
        if problem is not None:
            todo.append(k)
    n_todo = sum(len(records[k * shard_size : (k + 1) * shard_size]) for k in todo)
    logger.info(
        "detection (%s) in %s: %d shard(s) of %d for this process, %d already finished",
        backend.name,
        folder,
        len(mine),
        total,
        len(mine) - len(todo),
    )
    report = [
        {
            "shard": k,
            "path": str(folder / SHARD_PATTERN.format(k)),
            "num_images": 0,
            "status": "skipped",
            "seconds": 0.0,
        }
        for k in mine
        if k not in todo
    ]
    bar = tqdm(total=n_todo, unit="img", desc=f"detect[{backend.name}]", disable=not progress)
    try:
        for k in todo:
            start = time.perf_counter()
            shard = records[k * shard_size : (k + 1) * shard_size]
            results, quarantine = [], []
            for b in range(0, len(shard), max(1, backend.batch_size)):
                batch = shard[b : b + max(1, backend.batch_size)]
                res, bad = backend.detect(batch)
                results.extend(_check_results(backend, batch, res, bad))
                quarantine.extend(bad)
                bar.update(len(batch))
            # Quarantine first: the detections file's existence marks the shard as finished.
            _atomic_parquet(
                quarantine_frame(quarantine), folder / QUARANTINE_PATTERN.format(k), run
            )
            _atomic_parquet(detections_frame(results), folder / SHARD_PATTERN.format(k), run)
            report.append(
                {
                    "shard": k,
                    "path": str(folder / SHARD_PATTERN.format(k)),
                    "num_images": len(shard),
                    "status": "done",
                    "seconds": time.perf_counter() - start,
                }
            )
    finally:
        bar.close()
    frame = pd.DataFrame(report, columns=["shard", "path", "num_images", "status", "seconds"])
    frame["run_dir"] = str(folder)
    return frame.sort_values("shard", ignore_index=True)


def _check_results(
    backend: DetectorBackend,
    batch: Sequence[ImageRecord],
    results: list,
    quarantine: list[dict[str, Any]],
) -> list:
    """Every image of a batch must come back once: as a result or as a quarantine row.

    A result whose mask size disagrees with its image becomes a quarantine row (appended to
    ``quarantine``). A missing or unexpected image is a backend bug and raises.
    """
    by_id = {r.image_id: r for r in batch}
    seen = [r.image_id for r in results]
    seen += [q["image_id"] for q in quarantine if q["image_id"] is not None]  # ids may be 0
    missing = sorted(set(by_id) - set(seen))
    extra = sorted(set(seen) - set(by_id))
    if missing or extra:
        raise RuntimeError(
            f"backend {backend.name} returned no result for image(s) {missing[:10]} and "
            f"unexpected image(s) {extra[:10]}"
        )
    ok = []
    for res in results:
        rec = by_id[res.image_id]
        if (res.height, res.width) != (rec.height, rec.width):
            quarantine.append(
                quarantine_row(
                    "detection",
                    rec.path,
                    str(rec.image_id),
                    rec.image_id,
                    f"mask size {res.height}x{res.width} disagrees with image size "
                    f"{rec.height}x{rec.width} in the images table",
                )
            )
            continue
        ok.append(res)
    return ok


def merge_shards(
    folder: str | Path,
    records: Sequence[ImageRecord],
    shard_size: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Concatenate all shards of a run folder into ``detections`` and its quarantine table.

    Args:
        folder: the run folder (:func:`run_dir`, also in :func:`run_sharded`'s report).
        records: all images of the run, sorted by ``image_id``.
        shard_size: images per shard (the one the run was made with).

    Raises:
        FileNotFoundError: some shards are not finished, or damaged (names them, why, and how
            to finish them).
        RuntimeError: an image is neither in the detections nor in the quarantine.
    """
    folder = Path(folder)
    total = -(-len(records) // int(shard_size))
    run = _folder_fingerprint(folder)
    problems = {k: shard_problem(folder, k, run) for k in range(total)}
    missing = [k for k, problem in problems.items() if problem is not None]
    if missing:
        damaged = [f"shard {k}: {problems[k]}" for k in missing if problems[k] != "missing"]
        detail = f"; damaged: {'; '.join(damaged[:3])}" if damaged else ""
        raise FileNotFoundError(
            f"{len(missing)} of {total} detection shards are not finished in {folder} "
            f"(e.g. {missing[:10]}{detail}): run `kedro run --pipeline detection` again (with "
            "the detection.shard_index / num_shards of the processes that own them) to finish "
            "them; damaged shards are recomputed"
        )
    frames = [pd.read_parquet(folder / SHARD_PATTERN.format(k)) for k in range(total)]
    bad = [pd.read_parquet(folder / PREFLIGHT)] if (folder / PREFLIGHT).exists() else []
    bad += [pd.read_parquet(folder / QUARANTINE_PATTERN.format(k)) for k in range(total)]
    detections = pd.concat(frames, ignore_index=True) if frames else detections_frame([])
    quarantine = quarantine_frame(
        pd.concat(bad, ignore_index=True).to_dict("records") if bad else []
    )
    accounted = set(detections["image_id"].tolist())
    # Images whose decoding failed are in the quarantine (source "detection"), not detections.
    failed = quarantine.loc[quarantine["source"] == "detection", "image_id"].dropna()
    accounted |= {int(i) for i in failed}
    lost = [r.image_id for r in records if r.image_id not in accounted]
    if lost:
        raise RuntimeError(f"images {lost[:10]} are in no detection shard of {folder}")
    return detections, quarantine
