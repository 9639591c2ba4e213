"""Evaluation reports: long metric tables, the Table-1 comparison and figures."""

from ica_captioning.reports.figures import (
    attention_figure,
    training_curves_figure,
    upsample_attention,
)
from ica_captioning.reports.tables import (
    DIFFERENCE_LABEL,
    REPORT_COLUMNS,
    TABLE1_METRICS,
    VARIANT_LABELS,
    comparison_table,
    table1,
    with_keys,
)

__all__ = [
    "DIFFERENCE_LABEL",
    "REPORT_COLUMNS",
    "TABLE1_METRICS",
    "VARIANT_LABELS",
    "attention_figure",
    "comparison_table",
    "table1",
    "training_curves_figure",
    "upsample_attention",
    "with_keys",
]
