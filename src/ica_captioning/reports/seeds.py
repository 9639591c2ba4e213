"""Seed-to-seed spread of the Table-1 comparison.

On a small dataset one training run per model says little: the caption metrics of two runs that
differ only in the seed differ as much as the two models do. :func:`seed_spread` turns the
``comparison`` tables of several runs (one per ``train.seed``) into a long table and a summary
with the mean, the standard deviation and, for the ``difference`` row, in how many seeds +ICA
was better. ``benchmarks/seed_spread.py`` runs the pipeline per seed and calls it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ica_captioning.reports.tables import DIFFERENCE_VARIANT

#: Metrics where lower is better (a negative +ICA − SAT difference is a win).
LOWER_IS_BETTER = ("CHAIR-i", "CHAIR-s")

#: Metrics that are references, not qualities (no winner is counted for them).
NOT_COMPARED_MARK = "_chance"

#: Columns of the comparison table that are labels, not metrics.
LABEL_COLUMNS = ("dataset", "split", "model", "variant", "run_id")


def seed_spread(comparisons: Mapping[int, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long table and summary of several runs' ``comparison`` tables.

    Args:
        comparisons: ``{seed: comparison table}`` (the evaluation pipeline's ``comparison``:
            one row per ``variant`` — ``baseline``, ``ica``, ``difference`` — and one column
            per metric).

    Returns:
        ``(long, summary)``. ``long``: ``seed, variant, metric, value``. ``summary``: one row per
        ``variant, metric`` with ``seeds`` (finite values), ``mean``, ``std`` (sample, ``ddof=1``;
        NaN for one seed), ``min``, ``max`` and, on ``difference`` rows, ``ica_better`` = seeds in
        which +ICA beat the baseline (``difference > 0``, or ``< 0`` for
        :data:`LOWER_IS_BETTER`; NaN for reference values such as the chance level).

    Raises:
        ValueError: no runs, or a table without a ``variant`` column.
    """
    if not comparisons:
        raise ValueError("seed_spread needs at least one comparison table")
    parts = []
    for seed, table in comparisons.items():
        if "variant" not in table.columns:
            raise ValueError(f"comparison table of seed {seed} has no 'variant' column")
        metrics = [c for c in table.columns if c not in LABEL_COLUMNS]
        long = table.melt(id_vars=["variant"], value_vars=metrics, var_name="metric")
        long.insert(0, "seed", int(seed))
        parts.append(long)
    long = pd.concat(parts, ignore_index=True)
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype(float)

    grouped = long.groupby(["variant", "metric"], sort=False)["value"]
    summary = grouped.agg(
        seeds="count", mean="mean", std=lambda v: v.std(ddof=1), min="min", max="max"
    ).reset_index()
    lower = long["metric"].isin(LOWER_IS_BETTER)
    better = np.where(lower, long["value"] < 0, long["value"] > 0)
    wins = (
        long.assign(better=better & long["value"].notna())
        .groupby(["variant", "metric"], sort=False)["better"]
        .sum()
        .reset_index(name="ica_better")
    )
    summary = summary.merge(wins, on=["variant", "metric"])
    compared = (summary["variant"] == DIFFERENCE_VARIANT) & ~summary["metric"].str.contains(
        NOT_COMPARED_MARK, regex=False
    )
    summary["ica_better"] = summary["ica_better"].where(compared)
    return long, summary
