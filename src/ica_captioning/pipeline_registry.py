"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Pipelines registered by name but left out of ``__default__`` (``kedro run``).
OPT_IN_PIPELINES = ("experiments",)


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/<name>/pipeline.py``.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; ``__default__`` runs them all
        but :data:`OPT_IN_PIPELINES`.
    """
    pipelines = find_pipelines(raise_errors=True)
    # The control-experiment grid (33 trainings) runs only when asked for:
    # `kedro run --pipeline experiments` (docs/experiments.md).
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in OPT_IN_PIPELINES), Pipeline([])
    )
    return pipelines
