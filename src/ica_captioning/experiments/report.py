"""Summary and figure of the control-experiment grid (from its long results table).

* :func:`summarise_results`: :func:`ica_captioning.experiments.stats.summarise` with the
  grid's baseline (``baseline``) and reference (``ica``) variants.
* :func:`gain_table`: per variant, the mean IoU of its training labels with the true ones and
  its paired gain over the baseline in one metric, with a bootstrap CI over seeds.
* :func:`gain_figure`: that table drawn: gain (y) against mask quality (x).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ica_captioning.experiments.grid import MASK_IOU
from ica_captioning.experiments.stats import bootstrap_ci, paired_test, summarise
from ica_captioning.params.experiments import BASELINE_VARIANT, ExperimentsParams
from ica_captioning.variants import ICA

#: The full-ICA variant of ``delta_vs_ica``.
REFERENCE_VARIANT = ICA
#: Confidence of the figure's intervals (that of ``summarise``'s CIs).
CONFIDENCE = 0.95
GAIN_COLUMNS = (
    "variant",
    "masks",
    "group",
    "series",
    "mask_iou",
    "gain",
    "ci_low",
    "ci_high",
    "n_seeds",
    "p_value",
)
#: Figure groups: true labels (ICA settings varied), degraded labels, and the controls.
GROUPS = {
    "true masks": "#1f77b4",
    "degraded masks": "#ff7f0e",
    "controls": "#2ca02c",
}


def summarise_results(results: pd.DataFrame, experiments: ExperimentsParams) -> pd.DataFrame:
    """``experiment_summary``: mean, CI, paired comparisons per (variant, split, metric)."""
    return summarise(
        results,
        baseline=BASELINE_VARIANT,
        reference=REFERENCE_VARIANT,
        n_resamples=experiments.stats.n_resamples,
        seed=experiments.stats.seed,
    )


def _group(masks: str) -> str:
    if masks == "true":
        return "true masks"
    if masks.startswith("degraded"):
        return "degraded masks"
    return "controls"


def gain_table(results: pd.DataFrame, experiments: ExperimentsParams) -> pd.DataFrame:
    """Per non-baseline variant: mask quality and paired gain over the baseline.

    Args:
        results: ``experiment_results`` (``variant, seed, split, metric, value``).
        experiments: the grid (variants' masks, ``figure.metric``, ``eval_split``, ``stats``).

    Returns:
        :data:`GAIN_COLUMNS`, variants in configuration order: ``mask_iou`` (mean over seeds),
        ``gain`` (mean over seeds of variant − baseline, same seed), its percentile bootstrap
        CI and sign-flip ``p_value``; ``series`` marks the variants of the degradation curve
        (true or degraded labels, no train override of their own).

    Raises:
        ValueError: ``figure.metric`` is not in the results of the evaluated split.
    """
    metric, split = experiments.figure.metric, experiments.eval_split
    rows = results[(results["metric"] == metric) & (results["split"] == split)]
    if rows.empty:
        available = sorted(results.loc[results["split"] == split, "metric"].unique().tolist())
        raise ValueError(
            f"experiments.figure.metric={metric!r} is not in the results of split {split!r}; "
            f"available: {available}"
        )
    values = rows.pivot_table(index="seed", columns="variant", values="value", aggfunc="first")
    ious = results[results["metric"] == MASK_IOU].groupby("variant")["value"].mean()
    base = values[BASELINE_VARIANT] if BASELINE_VARIANT in values else None
    out = []
    for variant, settings in experiments.variants.items():
        if variant == BASELINE_VARIANT or variant not in values:
            continue
        gain = low = high = p = np.nan
        n = 0
        if base is not None:
            mine, theirs = values[variant].to_numpy(), base.to_numpy()
            both = np.isfinite(mine) & np.isfinite(theirs)
            diffs = mine[both] - theirs[both]
            n = int(diffs.size)
            if n:
                gain = float(diffs.mean())
                low, high = bootstrap_ci(
                    diffs,
                    n_resamples=experiments.stats.n_resamples,
                    confidence=CONFIDENCE,
                    seed=experiments.stats.seed,
                )
                p = paired_test(mine[both], theirs[both])
        masks = settings.masks
        out.append(
            {
                "variant": variant,
                "masks": masks,
                "group": _group(masks),
                "series": (masks == "true" or masks.startswith("degraded"))
                and not settings.train_overrides,
                "mask_iou": float(ious.get(variant, np.nan)),
                "gain": gain,
                "ci_low": low,
                "ci_high": high,
                "n_seeds": n,
                "p_value": p,
            }
        )
    return pd.DataFrame(out, columns=list(GAIN_COLUMNS))


def gain_figure(gains: pd.DataFrame, metric: str, n_seeds: int) -> Figure:
    """Gain over the baseline (y, CI error bars) against training-label quality (x).

    Args:
        gains: :func:`gain_table`.
        metric: the y metric's name (axis label).
        n_seeds: seeds per variant (title).

    Returns:
        The figure; every point is labelled with its variant, coloured by :data:`GROUPS`; the
        degradation curve (true → degraded labels, default settings) is joined by a dashed
        line; y = 0 is the baseline.
    """
    fig = Figure(figsize=(8.0, 5.5), dpi=100)
    ax = fig.subplots()
    ax.axhline(0.0, color="0.3", linewidth=0.8, linestyle=":", label=f"{BASELINE_VARIANT} (λ = 0)")
    curve = gains[gains["series"]].sort_values("mask_iou")
    if len(curve) > 1:
        ax.plot(
            curve["mask_iou"],
            curve["gain"],
            color="0.6",
            linestyle="--",
            linewidth=1.0,
            zorder=1,
            label="degradation curve",
        )
    for group, colour in GROUPS.items():
        part = gains[gains["group"] == group]
        if part.empty:
            continue
        err = np.vstack(
            [
                (part["gain"] - part["ci_low"]).clip(lower=0).fillna(0).to_numpy(),
                (part["ci_high"] - part["gain"]).clip(lower=0).fillna(0).to_numpy(),
            ]
        )
        ax.errorbar(
            part["mask_iou"],
            part["gain"],
            yerr=err,
            fmt="o",
            color=colour,
            ecolor=colour,
            capsize=3,
            markersize=6,
            label=group,
            zorder=2,
        )
    # Labels to the right of a point, to the left near x = 1 where the true-label variants
    # share one x; those alternate above and below their point.
    shown = gains[np.isfinite(gains["mask_iou"]) & np.isfinite(gains["gain"])]
    right_edge = shown[shown["mask_iou"] > 0.85].sort_values("gain")["variant"].tolist()
    for row in shown.itertuples(index=False):
        left = row.variant in right_edge
        dy = (4 if right_edge.index(row.variant) % 2 == 0 else -11) if left else 4
        ax.annotate(
            row.variant,
            xy=(row.mask_iou, row.gain),
            xytext=(-7 if left else 7, dy),
            textcoords="offset points",
            fontsize=8,
            ha="right" if left else "left",
        )
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("mask IoU of the training pseudo-labels with the true ones (mean over seeds)")
    ax.set_ylabel(f"gain over baseline: {metric}")
    ax.set_title(
        f"{metric}: gain over the baseline vs pseudo-label quality\n"
        f"(mean of paired differences over {n_seeds} seeds, {CONFIDENCE:.0%} bootstrap CI)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def experiment_figure(results: pd.DataFrame, experiments: ExperimentsParams) -> Figure:
    """``experiment_figure``: :func:`gain_figure` of :func:`gain_table`."""
    return gain_figure(
        gain_table(results, experiments), experiments.figure.metric, len(experiments.seeds)
    )
