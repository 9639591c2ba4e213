"""The real command line: ``kedro run`` end to end on a tiny embedded dataset, in a subprocess.

The project (pyproject.toml, .telemetry, conf/base) is copied into a temporary folder with a
``conf/local/parameters.yml`` that shrinks every stage; ``kedro run`` runs there (catalog paths
and the ``dataset.*`` parameters are relative to it), so nothing is written into the project's
data/. The reports are then loaded through the project's own catalog (a ``KedroSession`` on the
copy) exactly as the notebook reads them.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PIPELINES = ("ingestion", "detection", "matching", "train", "evaluation")
RUN_ID = "cli-run"

#: The tiny configuration, as a user's conf/local would set it (parameters merge softly).
TINY = {
    "ingestion": {
        "synthetic": {"num_images": 48, "image_size": 64},
        "min_word_freq": 1,
        "validation": {"progress": False},
    },
    "detection": {"progress": False},
    "matching": {"grid_size": 8, "progress": False},
    "train": {
        "epochs": 1,
        "batch_size": 16,
        "progress_bar": False,
        "encoder": {"image_size": 64, "grid_size": 8},
        "decoder": {"embed_dim": 16, "hidden_dim": 32, "attention_dim": 16},
    },
    "evaluation": {"batch_size": 16, "max_len": 8, "figures": {"num_images": 2}},
}


def _project_copy(root: Path) -> Path:
    """pyproject.toml, .telemetry and conf/base of the project, a tiny conf/local; no data."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "conf" / "base", root / "conf" / "base")
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(TINY))
    (root / "src").mkdir()  # the package is imported from its installed (editable) location
    return root


def _kedro(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
    env["MPLBACKEND"] = "Agg"
    # stdin is closed: a telemetry (or any other) prompt would fail the run instead of waiting.
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"kedro {' '.join(args)} failed:\n{output[-4000:]}"
    # Telemetry neither asks for consent nor announces that it sends usage data.
    said = " ".join(output.lower().split())
    assert "consent" not in said and "anonymous usage data" not in said, output[-2000:]
    return proc


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, float]:
    """The tiny project after ``kedro run`` (every pipeline), and the run's wall time."""
    root = _project_copy(tmp_path_factory.mktemp("cli") / "project")
    start = time.perf_counter()
    _kedro(
        ["run", "--params", f"evaluation.metrics.meteor=true,evaluation.run_id={RUN_ID}"],
        root,
        timeout=600,
    )
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def catalog(cli_run):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root, _ = cli_run
    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        yield session.load_context().catalog


def _both_variants(table: pd.DataFrame, name: str) -> None:
    assert set(table["variant"]) == {"baseline", "ica"}, name
    counts = table["variant"].value_counts()
    assert counts["baseline"] == counts["ica"], name  # the same rows for each model


@pytest.mark.slow
def test_kedro_run_writes_every_report(cli_run, catalog):
    root, seconds = cli_run
    # Nothing went to the project's own data folder; everything is under the copy.
    # Everything went under the copy: the tiny run's dataset scope (data/<layer>/<scope>/) is
    # in no layer of the project's own data/.
    (scope,) = [p.name for p in (root / "data" / "08_reporting").iterdir()]
    assert not list((PROJECT / "data").glob(f"*/{scope}"))
    images = catalog.load("images")
    assert len(images) == TINY["ingestion"]["synthetic"]["num_images"]
    test_images = int((images["split"] == "test").sum())
    assert test_images > 0

    caps = catalog.load("caption_metrics")
    _both_variants(caps, "caption_metrics")
    assert (caps["run_id"] == RUN_ID).all() and (caps["num_images"] == test_images).all()
    by = caps.set_index(["variant", "metric"])
    for variant in ("baseline", "ica"):
        for metric in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "CHAIR-i", "CHAIR-s"):
            assert by.loc[(variant, metric), "status"].startswith("ok"), metric
        meteor = by.loc[(variant, "METEOR")]
        if shutil.which("java"):  # evaluation.metrics.meteor=true from the command line
            assert meteor["status"] == "ok" and 0 <= meteor["value"] <= 1
        else:
            assert meteor["status"] == "unavailable" and meteor["reason"]
        spice = by.loc[(variant, "SPICE")]
        assert spice["status"] == "ok" or (math.isnan(spice["value"]) and spice["reason"])

    ground = catalog.load("grounding_metrics")
    _both_variants(ground, "grounding_metrics")
    assert set(zip(ground["captions"], ground["masks"])) == {
        (c, m) for c in ("generated", "reference") for m in ("pseudo_labels", "ground_truth")
    }
    ref = ground.query("captions == 'reference' and metric == 'attention_correctness'")
    assert (ref["count"] > 0).all() and ref["value"].between(0, 1).all()

    words = catalog.load("grounding_words")
    assert {"baseline", "ica"} <= set(words["variant"])

    comparison = catalog.load("comparison")
    assert comparison["model"].tolist() == ["Show-Attend-Tell", "+ICA Loss", "Δ (+ICA − SAT)"]
    np.testing.assert_allclose(
        comparison.loc[2, "CIDEr"], comparison.loc[1, "CIDEr"] - comparison.loc[0, "CIDEr"]
    )

    stats = catalog.load("matching_stats")
    assert {"statistic", "key", "value"} <= set(stats.columns) and len(stats)

    for variant, lambda_aux in (("baseline", 0.0), ("ica", 0.1)):
        history = catalog.load(f"{variant}.training_history")
        assert history["epoch"].tolist() == [1]
        generated = catalog.load(f"{variant}.generated_captions")
        assert len(generated) == test_images
        bundle = catalog.load(f"{variant}.model")
        assert bundle["config"]["lambda_aux"] == lambda_aux

    # Figures cannot be loaded back (MatplotlibDataset is write-only): their latest version is
    # found through the catalog entries.
    figures = catalog["attention_figures"]
    assert figures.exists()
    pngs = sorted(Path(figures._get_load_path()).glob("image_*.png"))
    assert len(pngs) == TINY["evaluation"]["figures"]["num_images"]
    assert all(p.stat().st_size > 1000 for p in pngs)
    curves = catalog["training_curves"]
    assert curves.exists() and Path(curves._get_load_path()).stat().st_size > 1000
    print(f"kedro run (tiny, every pipeline): {seconds:.1f} s")


def test_kedro_registry_list(tmp_path):
    proc = _kedro(["registry", "list"], _project_copy(tmp_path / "project"), timeout=120)
    listed = {line.strip().lstrip("- ").strip() for line in proc.stdout.splitlines()}
    assert {"__default__", *PIPELINES} <= listed, proc.stdout
