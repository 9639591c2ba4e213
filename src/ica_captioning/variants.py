"""The trained variants: their names (Kedro namespaces, report rows) and their display labels."""

#: SAT baseline, trained with λ_aux = 0.
BASELINE = "baseline"
#: SAT + ICA loss, trained with the configured λ_aux.
ICA = "ica"
#: Variants trained and evaluated by the default pipelines, in report order.
VARIANTS = (BASELINE, ICA)
#: The Transformer decoder, trained with λ_aux = 0 (the opt-in ``transformer`` pipeline).
TRANSFORMER_BASELINE = "transformer_baseline"
#: The Transformer decoder + ICA loss on its chosen cross-attention maps.
TRANSFORMER_ICA = "transformer_ica"
#: Variants trained and evaluated by the ``transformer`` pipeline, in report order.
TRANSFORMER_VARIANTS = (TRANSFORMER_BASELINE, TRANSFORMER_ICA)
#: Row labels of Table 1 and the figures.
LABELS = {
    BASELINE: "Show-Attend-Tell",
    ICA: "+ICA Loss",
    TRANSFORMER_BASELINE: "Transformer",
    TRANSFORMER_ICA: "Transformer +ICA Loss",
}
#: The compared pairs of the comparison table, in report order: ``(baseline variant, +ICA
#: variant, variant and label of the row holding +ICA minus the baseline)``.
COMPARED_PAIRS = (
    (BASELINE, ICA, "difference", "Δ (+ICA − SAT)"),
    (TRANSFORMER_BASELINE, TRANSFORMER_ICA, "transformer_difference", "Δ (+ICA − Transformer)"),
)
