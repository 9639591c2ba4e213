"""Report tables: long-format metric tables and the paper's Table-1 comparison."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ica_captioning.variants import COMPARED_PAIRS, LABELS

#: Key columns of every long-format report (docs/contracts.md style: add columns, never rename).
REPORT_COLUMNS = ["dataset", "variant", "split", "metric", "value", "run_id"]

#: Row labels of the comparison, as in the paper's Table 1 (defined once, in ``variants``).
VARIANT_LABELS = LABELS
#: ``variant`` and label of the comparison row holding +ICA minus the (SAT) baseline.
DIFFERENCE_VARIANT, DIFFERENCE_LABEL = COMPARED_PAIRS[0][2:]

#: The metrics of the paper's Table 1, in its column order.
TABLE1_METRICS = ["BLEU-1", "BLEU-4", "CIDEr", "METEOR", "ROUGE-L", "SPICE"]
#: Further caption metrics shown after them.
EXTRA_CAPTION_METRICS = ["BLEU-2", "BLEU-3", "CHAIR-i", "CHAIR-s"]


def with_keys(
    frame: pd.DataFrame, dataset: str, variant: str, split: str, run_id: str
) -> pd.DataFrame:
    """Add the report key columns to a ``metric``/``value`` table (keys first)."""
    out = frame.copy()
    out["dataset"] = str(dataset)
    out["variant"] = str(variant)
    out["split"] = str(split)
    out["run_id"] = str(run_id)
    out["value"] = out["value"].astype("float64")
    rest = [c for c in out.columns if c not in REPORT_COLUMNS]
    return out[REPORT_COLUMNS + rest].reset_index(drop=True)


def grounding_column(metric: str, captions: str, masks: str) -> str:
    """Comparison column of a grounding metric, e.g. ``AC [generated/ground_truth]``."""
    return f"{metric} [{captions}/{masks}]"


def comparison_table(
    caption_metrics: pd.DataFrame,
    grounding_metrics: pd.DataFrame,
    pairs: Sequence[tuple[str, str, str, str]] = COMPARED_PAIRS,
) -> pd.DataFrame:
    """Table-1 layout: per dataset, each compared pair's baseline row, +ICA row and difference.

    Every model with rows gets its row: the pairs in their order (baseline, +ICA, then the
    difference when both are there; e.g. Show-Attend-Tell, then the Transformer), then any
    other variant in the order of the tables.

    Args:
        caption_metrics: long table (:data:`REPORT_COLUMNS`), one run.
        grounding_metrics: long table with ``captions`` and ``masks`` columns, one run.
        pairs: ``(baseline, +ICA, difference variant, difference label)`` per compared pair
            (:data:`ica_captioning.variants.COMPARED_PAIRS`).

    Returns:
        Columns ``dataset``, ``split``, ``model`` (Table-1 label), ``variant``
        (``baseline`` / ``ica`` / ``difference`` / ``transformer_baseline`` / ...), then the
        Table-1 metrics, the extra caption metrics and the grounding metrics
        (``metric [captions/masks]``), then ``run_id``. Metrics that could not be computed
        (e.g. SPICE) are NaN.
    """
    caps = caption_metrics[["dataset", "split", "variant", "metric", "value", "run_id"]]
    parts = [caps]
    if not grounding_metrics.empty:
        g = grounding_metrics.copy()
        g["metric"] = [
            grounding_column(m, c, k) for m, c, k in zip(g["metric"], g["captions"], g["masks"])
        ]
        parts.append(g[caps.columns])
    long = pd.concat(parts, ignore_index=True)
    wide = long.pivot_table(
        index=["dataset", "split", "variant"],
        columns="metric",
        values="value",
        aggfunc="first",
        dropna=False,
    )
    grounding_cols = sorted(c for c in wide.columns if "[" in c)
    caption_cols = TABLE1_METRICS + EXTRA_CAPTION_METRICS
    others = sorted(c for c in wide.columns if c not in caption_cols and c not in grounding_cols)
    columns = caption_cols + others + grounding_cols
    wide = wide.reindex(columns=columns)
    run_ids = long.groupby(["dataset", "split"])["run_id"].first()

    order = list(dict.fromkeys(long["variant"]))  # the tables' order, for unpaired variants
    paired = {v for pair in pairs for v in pair[:2]}
    rows = []
    for (dataset, split), block in wide.groupby(level=["dataset", "split"], sort=True):
        block = block.droplevel(["dataset", "split"])
        keys = {"dataset": dataset, "split": split}
        block_rows = []
        for baseline, treatment, diff_variant, diff_label in pairs:
            base = block.loc[baseline] if baseline in block.index else None
            treat = block.loc[treatment] if treatment in block.index else None
            for variant, values in ((baseline, base), (treatment, treat)):
                if values is not None:
                    block_rows.append(
                        {**keys, "model": VARIANT_LABELS.get(variant, variant),
                         "variant": variant, **values.to_dict()}
                    )  # fmt: skip
            if base is not None and treat is not None:
                block_rows.append(
                    {**keys, "model": diff_label, "variant": diff_variant,
                     **(treat - base).to_dict()}
                )  # fmt: skip
        for variant in order:
            if variant not in paired and variant in block.index:
                block_rows.append(
                    {**keys, "model": VARIANT_LABELS.get(variant, variant), "variant": variant,
                     **block.loc[variant].to_dict()}
                )  # fmt: skip
        for r in block_rows:
            r["run_id"] = run_ids.loc[(dataset, split)]
        rows += block_rows
    out = pd.DataFrame(rows, columns=["dataset", "split", "model", "variant", *columns, "run_id"])
    out[columns] = out[columns].astype("float64")
    return out


def table1(
    comparison: pd.DataFrame, metrics: Sequence[str] = tuple(TABLE1_METRICS)
) -> pd.DataFrame:
    """The paper's Table 1 view of a comparison: dataset, model and its six metrics."""
    cols = ["dataset", "model", *[m for m in metrics if m in comparison.columns]]
    return comparison[cols].reset_index(drop=True)


def finite_or_nan(values: Sequence[float]) -> np.ndarray:
    """Float array with infinities turned into NaN (Parquet and plots read them alike)."""
    arr = np.asarray(values, dtype=np.float64)
    arr[~np.isfinite(arr)] = np.nan
    return arr
