"""notebooks/table1.ipynb runs top to bottom against reports saved through the Kedro catalog."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK = PROJECT / "notebooks" / "table1.ipynb"


def _long(variant: str, values: dict[str, float], **extra) -> pd.DataFrame:
    from ica_captioning.reports import with_keys

    frame = pd.DataFrame({"metric": list(values), "value": list(values.values()), **extra})
    return with_keys(frame, "synthetic", variant, "test", "nb-run")


@pytest.fixture
def project_with_reports(tmp_path):
    """A copy of the project configuration whose catalog holds one saved set of reports."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ica_captioning.reports import attention_figure, comparison_table, training_curves_figure

    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PROJECT / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is imported from its installed location
    names = ["BLEU-1", "BLEU-4", "CIDEr", "METEOR", "ROUGE-L", "SPICE", "CHAIR-i", "CHAIR-s"]
    caps = pd.concat(
        [
            _long(
                v,
                dict(zip(names, vals)),
                status=["ok"] * 5 + ["unavailable", "ok", "ok"],
                reason=[""] * 5 + ["jars missing", "", ""],
            )  # fmt: skip
            for v, vals in (
                ("baseline", [0.60, 0.20, 0.50, 0.20, 0.50, np.nan, 0.10, 0.30]),
                ("ica", [0.62, 0.22, 0.55, 0.21, 0.52, np.nan, 0.08, 0.25]),
            )
        ]
    )
    ground = pd.concat(
        [
            _long(
                v,
                {"attention_correctness": ac},
                captions=["generated"],
                masks=["pseudo_labels"],
                count=[40],
            )  # fmt: skip
            for v, ac in (("baseline", 0.3), ("ica", 0.5))
        ]
    )
    image = np.zeros((32, 32, 3), np.uint8)
    maps = np.full((2, 4, 4), 1 / 16)
    bootstrap_project(tmp_path)
    with KedroSession.create(project_path=tmp_path) as session:
        catalog = session.load_context().catalog
        catalog.save("caption_metrics", caps)
        catalog.save("grounding_metrics", ground)
        catalog.save("comparison", comparison_table(caps, ground))
        catalog.save(
            "attention_figures",
            {"image_1.png": attention_figure(image, [("SAT", ["a", "star"], maps)])},
        )
        catalog.save(
            "grounding_words",
            pd.DataFrame(
                {
                    "variant": ["baseline", "ica"],
                    "captions": ["generated"] * 2,
                    "masks": ["pseudo_labels"] * 2,
                    "class_name": ["star"] * 2,
                    "attention_correctness": [0.3, 0.5],
                }
            ),
        )
        for variant, caption in (("baseline", "a red star"), ("ica", "a yellow star")):
            catalog.save(
                f"{variant}.generated_captions",
                pd.DataFrame({"image_id": [1], "caption": [caption], "tokens": [caption.split()]}),
            )
        history = pd.DataFrame({"epoch": [1, 2], "train_ce": [3.0, 2.0]})
        catalog.save("training_curves", training_curves_figure({"SAT": history}))
    return tmp_path


def execute_notebook(project: Path, monkeypatch) -> list:
    """Run the notebook top to bottom against ``project``'s catalog; its code-cell outputs.

    Fails on any error output.
    """
    monkeypatch.setenv("ICA_PROJECT_PATH", str(project))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(PROJECT / "notebooks")}},
    )
    client.execute(env=dict(os.environ))
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


@pytest.mark.slow
def test_notebook_executes_top_to_bottom(project_with_reports, monkeypatch):
    outputs = execute_notebook(project_with_reports, monkeypatch)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "+ICA Loss" in html and "Show-Attend-Tell" in html  # Table 1 rendered
    assert "jars missing" in html  # the SPICE reason is shown
    assert "a yellow star" in html  # generated captions side by side
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # one attention figure + the training curves
