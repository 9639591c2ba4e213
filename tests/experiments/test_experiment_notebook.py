"""notebooks/table1.ipynb's control-experiment section, with experiment reports in the catalog.

(tests/test_notebook.py runs the notebook without them: the section then says how to make them.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from project_conf import conf_params
from test_notebook import execute_notebook, project_with_reports  # noqa: F401 (fixture)

from ica_captioning.experiments import report
from ica_captioning.params.experiments import ExperimentsParams


def _results(exp: ExperimentsParams) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k, variant in enumerate(exp.variants):
        for seed in exp.seeds:
            for metric, value in (
                ("BLEU-4", 0.15 + 0.01 * k),
                ("attention_correctness [reference/pseudo_labels]", 0.05 + 0.02 * k),
            ):
                rows.append((variant, seed, "test", metric, value + rng.normal(0, 0.01)))
            rows.append((variant, seed, "train", "mask_iou", 1.0 - 0.05 * k))
    return pd.DataFrame(rows, columns=["variant", "seed", "split", "metric", "value"])


@pytest.mark.slow
def test_notebook_shows_the_experiment_summary(project_with_reports, monkeypatch):  # noqa: F811
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    exp = ExperimentsParams.parse(conf_params()["experiments"], "experiments")
    results = _results(exp)
    bootstrap_project(project_with_reports)
    with KedroSession.create(project_path=project_with_reports) as session:
        catalog = session.load_context().catalog
        catalog.save("experiment_summary", report.summarise_results(results, exp))
        catalog.save("experiment_figure", report.experiment_figure(results, exp))

    outputs = execute_notebook(project_with_reports, monkeypatch)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "ica_degraded_25" in html and "ica_lambda_0.01" in html
    assert "attention_correctness [reference/pseudo_labels]" in html
    text = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "Gain over the baseline" in text and "No `experiment_summary`" not in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # attention figure, training curves, experiment figure
