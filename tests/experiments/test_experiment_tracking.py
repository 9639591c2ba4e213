"""Optional MLflow tracking: off by default, a clear message without mlflow, and with mlflow
installed (``pip install -e ".[tracking]"``) one real local run per (variant, seed)."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
import torch
from experiment_data import experiment_sections, grid_inputs, make_experiment_dataset

from ica_captioning.experiments import grid
from ica_captioning.experiments.tracking import (
    INSTALL_HINT,
    NullTracker,
    TrackingUnavailableError,
    flatten,
    make_tracker,
    metric_key,
)
from ica_captioning.params.experiments import TrackingParams

VARIANTS = {
    "baseline": {"masks": "true", "train_overrides": {"lambda_aux": 0.0}},
    "ica_degraded_50": {"masks": "degraded_50", "train_overrides": {}},
}


def _tracking(tmp_path, enabled=True) -> TrackingParams:
    return TrackingParams(
        enabled=enabled,
        uri=f"sqlite:///{tmp_path}/store/mlflow.db",
        artifact_location=str(tmp_path / "artifacts"),
        experiment_name="ica-test",
        log_models=True,
    )


def test_names_and_parameters_fit_mlflow():
    assert metric_key("attention_correctness [reference/pseudo_labels]") == (
        "attention_correctness/reference/pseudo_labels"
    )
    assert metric_key("test/CHAIR-i") == "test/CHAIR-i"
    assert metric_key("a:b") == "a_b"
    flat = flatten({"train": {"encoder": {"backbone": "resnet18"}, "lr_schedule": {}},
                    "seed": 1, "grad_clip": None})  # fmt: skip
    assert flat == {
        "train.encoder.backbone": "resnet18",
        "train.lr_schedule": "{}",
        "seed": "1",
        "grad_clip": "None",
    }


def test_disabled_tracking_needs_no_mlflow(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    tracker = make_tracker(_tracking(tmp_path, enabled=False))
    assert isinstance(tracker, NullTracker)
    with tracker.run("x", {}) as run:
        run.log_params({"a": 1})
        run.log_metrics({"m": 1.0})
    with pytest.raises(TrackingUnavailableError) as err:
        make_tracker(_tracking(tmp_path))
    assert "experiments.tracking.enabled" in str(err.value) and INSTALL_HINT in str(err.value)


@pytest.mark.slow
def test_runs_are_logged_to_a_local_mlflow_store(tmp_path):
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    from mlflow.tracking import MlflowClient

    data = make_experiment_dataset(tmp_path / "data")
    sections = experiment_sections(tmp_path, data["images_dir"], VARIANTS, [0, 1],
                                   tracking=_tracking(tmp_path).model_dump())  # fmt: skip
    exp, evaluation, training = grid_inputs(data, sections)
    tracker = make_tracker(exp.tracking)
    results, _ = grid.run_variant(
        "ica_degraded_50", exp, sections["train"], training, evaluation, tracker
    )

    client = MlflowClient(exp.tracking.uri)
    experiment = client.get_experiment_by_name("ica-test")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    assert [r.info.run_name for r in runs] == ["ica_degraded_50-seed0", "ica_degraded_50-seed1"]
    for seed, run in enumerate(runs):
        assert run.info.status == "FINISHED"
        assert run.data.tags["variant"] == "ica_degraded_50" and run.data.tags["seed"] == str(seed)
        params = run.data.params
        assert params["train.seed"] == str(seed) and params["masks"] == "degraded_50"
        assert params["train.encoder.weights"] == "none"
        assert params["evaluation.split"] == "test" and params["train.epochs"] == "1"
        mine = results[results["seed"] == seed].set_index("metric")["value"]
        metrics = run.data.metrics
        assert metrics["train/mask_iou"] == pytest.approx(mine["mask_iou"])
        assert metrics["test/CIDEr"] == pytest.approx(mine["CIDEr"])
        assert metrics["test/attention_correctness/reference/pseudo_labels"] == pytest.approx(
            mine["attention_correctness [reference/pseudo_labels]"]
        )
        history = client.get_metric_history(run.info.run_id, "history/train_ce")
        assert [m.step for m in history] == [1]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
        assert artifacts == ["model/model.pt"]
        local = client.download_artifacts(run.info.run_id, "model/model.pt", str(tmp_path))
        bundle = torch.load(local, weights_only=False)
        assert bundle["config"]["seed"] == seed and set(bundle) >= {"state_dict", "vocabulary"}
    assert str(tmp_path / "artifacts") in runs[0].info.artifact_uri


def test_a_failing_run_is_marked_failed(tmp_path):
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    from mlflow.tracking import MlflowClient

    tracker = make_tracker(_tracking(tmp_path))
    with pytest.raises(RuntimeError, match="boom"), tracker.run("broken", {"variant": "x"}) as run:
        run.log_history(pd.DataFrame({"epoch": [1, 2], "train_ce": [2.0, float("nan")]}))
        raise RuntimeError("boom")
    client = MlflowClient(_tracking(tmp_path).uri)
    (found,) = client.search_runs([tracker.experiment_id])
    assert found.info.status == "FAILED" and found.info.run_name == "broken"
    # The NaN epoch is skipped, the finite one kept.
    assert [m.step for m in client.get_metric_history(found.info.run_id, "history/train_ce")] == [1]
    # A second tracker finds the same experiment instead of creating another.
    assert make_tracker(_tracking(tmp_path)).experiment_id == tracker.experiment_id
