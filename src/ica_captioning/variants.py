"""The trained variants: their names (Kedro namespaces, report rows) and their display labels."""

#: SAT baseline, trained with λ_aux = 0.
BASELINE = "baseline"
#: SAT + ICA loss, trained with the configured λ_aux.
ICA = "ica"
#: Variants trained and evaluated by the default pipelines, in report order.
VARIANTS = (BASELINE, ICA)
#: Row labels of Table 1 and the figures.
LABELS = {BASELINE: "Show-Attend-Tell", ICA: "+ICA Loss"}
