"""``kedro run --pipeline experiments`` for real, in a subprocess, on a tiny embedded dataset.

The project configuration is copied into a temporary folder (as in tests/test_kedro_cli.py,
whose tiny settings are reused) with a conf/local that also shrinks the grid to two variants,
one of them defined only in conf/local, and one seed; the reports are read back through the
project's catalog.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_kedro_cli import TINY

from ica_captioning.params import deep_merge

PROJECT = Path(__file__).resolve().parents[3]
GRID = {
    # The encoder starts from the pretraining stage's weights (conf/base); one short epoch.
    "pretraining": {"epochs": 1, "progress": False},
    "experiments": {
        "seeds": [0],
        "train_overrides": {"epochs": 1},
        "stats": {"n_resamples": 100},
        "progress": False,
        # conf/local adds a variant; the other conf/base variants are replaced below.
        "variants": {"ica_boxes_local": {"masks": "boxes", "train_overrides": {}}},
    },
}


def _project(root: Path) -> Path:
    root.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / "conf" / "base", root / "conf" / "base")
    # Keep only the baseline of conf/base's grid (soft merge cannot remove keys).
    path = root / "conf" / "base" / "parameters_experiments.yml"
    base = yaml.safe_load(path.read_text())
    base["experiments"]["variants"] = {"baseline": base["experiments"]["variants"]["baseline"]}
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    (root / "conf" / "local").mkdir()
    (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(deep_merge(TINY, GRID)))
    (root / "src").mkdir()  # the package is imported from its installed (editable) location
    return root


@pytest.mark.slow
def test_kedro_run_pipeline_experiments(tmp_path):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root = _project(tmp_path / "project")
    env = {**os.environ, "DO_NOT_TRACK": "1", "KEDRO_DISABLE_TELEMETRY": "true"}
    env["MPLBACKEND"] = "Agg"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline", "experiments"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "experiments run" in output, output[-4000:]  # the grid's progress log lines

    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        catalog = session.load_context().catalog
        results = catalog.load("experiment_results")
        summary = catalog.load("experiment_summary")
        figure = catalog.get("experiment_figure")
    assert results[["variant", "seed"]].drop_duplicates().values.tolist() == [
        ["baseline", 0],
        ["ica_boxes_local", 0],
    ]
    assert {"BLEU-4", "CIDEr", "CHAIR-i", "mask_iou"} <= set(results["metric"])
    assert "attention_correctness [reference/ground_truth]" in set(results["metric"])
    assert set(summary["variant"]) == {"baseline", "ica_boxes_local"}
    assert figure.exists()
    # Nothing went to the project's own data folder.
    (scope,) = [p.name for p in (root / "data" / "08_reporting").iterdir()]
    assert not list((PROJECT / "data").glob(f"*/{scope}"))
    print(f"kedro run --pipeline experiments (tiny, 2 runs): {seconds:.1f} s")
