"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: Pipelines registered by name but left out of ``__default__`` (``kedro run``): the control
#: experiments (33 trainings) and the Transformer decoder (two more models; the default run stays
#: within 5 minutes on 2 CPU cores). Each runs with ``kedro run --pipeline <name>``.
OPT_IN_PIPELINES = ("experiments", "transformer")


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under ``pipelines/<name>/pipeline.py``.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects; ``__default__`` runs them all
        but :data:`OPT_IN_PIPELINES`.
    """
    pipelines = find_pipelines(raise_errors=True)
    # The control-experiment grid (33 trainings) and the Transformer decoder run only when asked
    # for: `kedro run --pipeline experiments` (docs/experiments.md), `kedro run --pipeline
    # transformer` (docs/training.md, "Transformer decoder").
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in OPT_IN_PIPELINES), Pipeline([])
    )
    return pipelines
