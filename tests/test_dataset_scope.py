"""Two datasets in one project through real Kedro sessions: they never overwrite each other,
the catalog returns each dataset's own tables, and mixing them stops the run naming both."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from ica_captioning.data.scope import SCOPE_ATTR

PROJECT = Path(__file__).resolve().parents[1]
SMALL = {"ingestion": {"synthetic": {"num_images": 20, "image_size": 64}}}


def _session(project: Path, params: dict) -> KedroSession:
    bootstrap_project(project)
    return KedroSession.create(project_path=project, runtime_params=params)


def _run(project: Path, params: dict, pipeline: str) -> None:
    with _session(project, params) as session:
        session.run(pipeline_names=[pipeline])


def _load(project: Path, params: dict, name: str):
    with _session(project, params) as session:
        context = session.load_context()
        return context.catalog.load(name), context.params["dataset_scope"]


@pytest.mark.slow
def test_two_datasets_keep_their_own_tables(tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # the package itself is installed
    shutil.copy(PROJECT / "pyproject.toml", project / "pyproject.toml")
    monkeypatch.chdir(project)
    synthetic = SMALL
    _run(project, synthetic, "ingestion")
    raw = project / "data" / "01_raw" / "synthetic"
    # A second dataset in Karpathy format: the embedded set's Karpathy file under another name.
    flickr = SMALL | {
        "dataset": {
            "name": "flickr8k",
            "annotations": str(raw / "dataset_synthetic.json"),
            "images_dir": str(raw),
            "instances": None,
        },
        "ingestion": {"synthetic": SMALL["ingestion"]["synthetic"], "min_word_freq": 1},
    }
    images_a, scope_a = _load(project, synthetic, "images")
    vocab_a, _ = _load(project, synthetic, "vocabulary")
    written = {p: p.stat().st_mtime_ns for p in (project / "data").rglob(f"{scope_a}/*.*")}
    _run(project, flickr, "ingestion")
    images_b, scope_b = _load(project, flickr, "images")
    vocab_b, _ = _load(project, flickr, "vocabulary")
    assert scope_a.startswith("synthetic-") and scope_b.startswith("flickr8k-")
    # Each dataset's tables under its own folder, stamped with its scope; A's files untouched.
    for layer, name in (("03_primary", "images.parquet"), ("04_feature", "vocabulary.json")):
        assert (project / "data" / layer / scope_a / name).is_file()
        assert (project / "data" / layer / scope_b / name).is_file()
    assert {p: p.stat().st_mtime_ns for p in written} == written
    assert images_a.attrs[SCOPE_ATTR] == scope_a and images_b.attrs[SCOPE_ATTR] == scope_b
    # Loading through the catalog with a dataset's parameters returns that dataset's table.
    assert vocab_a["min_freq"] == 5 and vocab_b["min_freq"] == 1
    assert _load(project, synthetic, "vocabulary")[0] == vocab_a

    # A table of dataset B put where dataset A's stage reads it: the stage stops, naming both.
    shutil.copy(
        project / "data" / "03_primary" / scope_b / "images.parquet",
        project / "data" / "03_primary" / scope_a / "images.parquet",
    )
    with pytest.raises(ValueError) as err:
        _run(project, synthetic | {"detection": {"progress": False}}, "detection")
    assert scope_a in str(err.value) and scope_b in str(err.value)
