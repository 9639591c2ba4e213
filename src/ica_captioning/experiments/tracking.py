"""Optional MLflow tracking of the control-experiment runs (the ``tracking`` extra).

One MLflow run per (variant, seed): its resolved parameters, the per-epoch training history
(one metric per numeric history column, ``step`` = epoch), the final metrics and, optionally,
the model bundle as an artifact. Runs are written with :class:`mlflow.tracking.MlflowClient`
and an explicit tracking URI, never through MLflow's global "active run", so they work the same
in any process (``ParallelRunner``) and next to the kedro-mlflow plugin's run of the whole
``kedro run``. mlflow is imported only when tracking is enabled; without it
:func:`make_tracker` stops with the install command.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ica_captioning.params.experiments import TrackingParams

logger = logging.getLogger(__name__)

#: What to install for tracking (pyproject.toml's optional dependencies).
INSTALL_HINT = 'pip install -e ".[tracking]"'
#: MLflow's batch limits (``mlflow.utils.validation``): params and metrics per ``log_batch``.
_MAX_PARAMS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
#: Longest parameter value MLflow 3 stores (6000 characters); longer values are cut.
_MAX_PARAM_LENGTH = 6000


class TrackingUnavailableError(RuntimeError):
    """Tracking is enabled but mlflow cannot be imported."""


class RunTracker(Protocol):
    """What the grid reports about one run (see :class:`MlflowRunTracker`)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters, flattened to dotted keys."""

    def log_history(self, history: pd.DataFrame) -> None:
        """Log every numeric history column per epoch."""

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log the final metrics (non-finite values are skipped)."""

    def log_model(self, bundle: Mapping[str, Any]) -> None:
        """Store the model bundle."""


class Tracker(Protocol):
    """Opens one :class:`RunTracker` per run."""

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str]) -> Iterator[RunTracker]:
        """A run named ``name``; ends FINISHED, or FAILED when the block raises."""


class _NullRun:
    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_history(self, history: pd.DataFrame) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        pass

    def log_model(self, bundle: Mapping[str, Any]) -> None:
        pass


class NullTracker:
    """Tracking disabled: every call does nothing."""

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str]) -> Iterator[RunTracker]:
        """A run that records nothing."""
        yield _NullRun()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``{"train.encoder.backbone": "resnet18", ...}`` (values as text)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:_MAX_PARAM_LENGTH]
    return out


def metric_key(name: str) -> str:
    """An MLflow metric key for a report metric name.

    MLflow keys allow letters, digits, ``_ - . /`` and spaces; the grounding names
    ``attention_correctness [reference/pseudo_labels]`` become
    ``attention_correctness/reference/pseudo_labels``.
    """
    key = re.sub(r"\s*\[(.*?)\]", r"/\1", str(name)).strip()
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key)


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _local_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (relative to the working directory), else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


class MlflowRunTracker:
    """One MLflow run, written through an :class:`mlflow.tracking.MlflowClient`."""

    def __init__(self, client: Any, run_id: str, log_models: bool) -> None:
        self.client = client
        self.run_id = run_id
        self.log_models = log_models

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) parameters, flattened to dotted keys, 100 per request."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(flatten(params).items())]
        for chunk in _chunks(items, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)

    def log_history(self, history: pd.DataFrame) -> None:
        """Every numeric column of the per-epoch history, at ``step`` = epoch."""
        from mlflow.entities import Metric

        if history is None or history.empty:
            return
        epochs = (
            history["epoch"].astype(int).tolist()
            if "epoch" in history.columns
            else list(range(1, len(history) + 1))
        )
        columns = [
            c
            for c in history.columns
            if c != "epoch" and pd.api.types.is_numeric_dtype(history[c])
            and not pd.api.types.is_bool_dtype(history[c])
        ]  # fmt: skip
        stamp = _now_ms()
        metrics = [
            Metric(metric_key(f"history/{c}"), float(v), stamp, int(step))
            for c in columns
            for step, v in zip(epochs, history[c].tolist())
            if v is not None and math.isfinite(float(v))
        ]
        for chunk in _chunks(metrics, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        """The final metrics at step 0; NaN (a metric unavailable for this run) is skipped."""
        from mlflow.entities import Metric

        stamp = _now_ms()
        items = [
            Metric(metric_key(k), float(v), stamp, 0)
            for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        ]
        for chunk in _chunks(items, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_model(self, bundle: Mapping[str, Any]) -> None:
        """The bundle as ``model/model.pt`` (``torch.load(..., weights_only=False)``)."""
        if not self.log_models:
            return
        import torch

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt"
            torch.save(dict(bundle), path)
            self.client.log_artifact(self.run_id, str(path), artifact_path="model")


class MlflowTracker:
    """Opens MLflow runs in one experiment of one tracking store."""

    def __init__(self, params: TrackingParams) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as err:  # pragma: no cover - exercised through make_tracker
            raise TrackingUnavailableError(
                "experiments.tracking.enabled is true but mlflow cannot be imported "
                f"({err}); install the tracking extra: {INSTALL_HINT}, or set "
                "experiments.tracking.enabled=false"
            ) from err
        db = _local_path(params.uri)
        if db is not None and db.parent != Path(""):
            db.parent.mkdir(parents=True, exist_ok=True)
        self.params = params
        self.client = MlflowClient(tracking_uri=params.uri)
        self.experiment_id = self._experiment_id(params)
        logger.info(
            "MLflow tracking: experiment %r (id %s) in %s",
            params.experiment_name,
            self.experiment_id,
            params.uri,
        )

    def _experiment_id(self, params: TrackingParams) -> str:
        """The experiment's id, created (with its artifact folder) on first use."""
        experiment = self.client.get_experiment_by_name(params.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        artifacts = Path(params.artifact_location).resolve()
        try:
            return self.client.create_experiment(
                params.experiment_name, artifact_location=artifacts.as_uri()
            )
        except Exception:
            # Another process (ParallelRunner) created it first.
            experiment = self.client.get_experiment_by_name(params.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str]) -> Iterator[RunTracker]:
        """One MLflow run; FINISHED when the block ends, FAILED when it raises."""
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()}
        )
        run_id = run.info.run_id
        try:
            yield MlflowRunTracker(self.client, run_id, self.params.log_models)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED")


def make_tracker(params: TrackingParams) -> Tracker:
    """:class:`MlflowTracker` when ``experiments.tracking.enabled``, else :class:`NullTracker`.

    Raises:
        TrackingUnavailableError: tracking is enabled and mlflow is not installed.
    """
    if not params.enabled:
        return NullTracker()
    return MlflowTracker(params)


def _now_ms() -> int:
    return int(time.time() * 1000)


__all__ = [
    "INSTALL_HINT",
    "MlflowTracker",
    "NullTracker",
    "RunTracker",
    "Tracker",
    "TrackingUnavailableError",
    "flatten",
    "make_tracker",
    "metric_key",
]
