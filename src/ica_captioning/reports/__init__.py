"""Evaluation reports: long metric tables, the Table-1 comparison and figures."""

from ica_captioning.reports.figures import (
    attention_figure,
    attention_figures,
    figure_sample,
    head_attention_figure,
    head_attention_figures,
    training_curves_figure,
    upsample_attention,
)
from ica_captioning.reports.tables import (
    DIFFERENCE_LABEL,
    DIFFERENCE_VARIANT,
    REPORT_COLUMNS,
    TABLE1_METRICS,
    VARIANT_LABELS,
    comparison_table,
    table1,
    with_keys,
)

__all__ = [
    "DIFFERENCE_LABEL",
    "DIFFERENCE_VARIANT",
    "REPORT_COLUMNS",
    "TABLE1_METRICS",
    "VARIANT_LABELS",
    "attention_figure",
    "attention_figures",
    "comparison_table",
    "figure_sample",
    "head_attention_figure",
    "head_attention_figures",
    "table1",
    "training_curves_figure",
    "upsample_attention",
    "with_keys",
]
