"""Statistics of the control experiments over training seeds.

Every variant (baseline, ica, shuffled, random, boxes, degraded_*) is trained with the same
seeds, so comparisons are paired by seed: the seed fixes initialisation and data order, and the
paired difference removes that shared variation.

The paired test is an exact two-sided **sign-flip permutation test** of the mean difference.
SciPy is not a dependency of the project, so the t distribution (and ``scipy.stats.ttest_rel``) is
not available; the sign-flip test needs no distributional assumption, which suits the 3–10 seeds
of these experiments better anyway. Its smallest possible p-value is ``2 / 2ⁿ`` (0.0625 for five
seeds: five seeds can never reach p < 0.05).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ica_captioning.data.tables import require_columns

#: Metric-name prefixes (case-insensitive) for which a lower value is better: the CHAIR
#: hallucination rates (``chair_i``, ``chair_s``, ``CHAIR-i`` ...). Every other metric (BLEU,
#: CIDEr, SPICE, attention correctness, IoU ...) is better when higher.
LOWER_IS_BETTER = ("chair",)

RESULT_COLUMNS = ("variant", "seed", "split", "metric", "value")
SUMMARY_COLUMNS = (
    "variant",
    "split",
    "metric",
    "mean",
    "ci_low",
    "ci_high",
    "n_seeds",
    "delta_vs_baseline",
    "wins_vs_baseline",
    "p_value",
    "delta_vs_ica",
)

#: Above this many seeds the sign flips are sampled instead of enumerated (2¹⁶ = 65 536 rows).
_EXACT_MAX_N = 16
_SAMPLED_FLIPS = 1 << 16


class ExperimentStatsError(ValueError):
    """Results cannot be summarised (the message names the variant, seeds or values)."""


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (see :data:`LOWER_IS_BETTER`)."""
    return str(metric).lower().startswith(LOWER_IS_BETTER)


def _finite_1d(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float64 ``[N]`` array; NaN or infinite entries are an error."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ExperimentStatsError(f"{name} must be one-dimensional, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ExperimentStatsError(
            f"{name} holds {int((~np.isfinite(x)).sum())} non-finite value(s); drop them first"
        )
    return x


def bootstrap_ci(
    values: np.ndarray, *, n_resamples: int, confidence: float = 0.95, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    The resamples are one draw ``default_rng(seed).integers(0, N, size=(n_resamples, N))`` (row
    ``b`` = the indices of resample ``b``); the bounds are ``np.quantile`` (linear
    interpolation) of the resample means at ``(1 − confidence) / 2`` and ``(1 + confidence) / 2``.

    Args:
        values: ``[N]`` finite values (one per seed).
        n_resamples: number of bootstrap resamples (``>= 1``).
        confidence: coverage of the interval, in ``(0, 1)``.
        seed: seed of the random generator.

    Returns:
        ``(low, high)``; ``(v, v)`` for a single value.

    Raises:
        ExperimentStatsError: empty or non-finite input, bad ``n_resamples`` / ``confidence``.
    """
    x = _finite_1d(values, "bootstrap_ci values")
    if x.size == 0:
        raise ExperimentStatsError("bootstrap_ci needs at least one value")
    if int(n_resamples) < 1:
        raise ExperimentStatsError(f"bootstrap_ci n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ExperimentStatsError(f"bootstrap_ci confidence must be in (0, 1), got {confidence}")
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(int(n_resamples), x.size))  # [B, N]
    means = x[idx].mean(axis=1)  # [B]
    low, high = np.quantile(means, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(low), float(high)


def paired_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired sign-flip permutation test of ``mean(a − b) = 0``.

    Under the null hypothesis each paired difference ``d_i`` is as likely to be ``+d_i`` as
    ``−d_i``; the p-value is the fraction of the ``2ⁿ`` sign assignments whose ``|Σ ± d_i|`` is at
    least the observed ``|Σ d_i|``. ``Σ d_i²`` does not change under sign flips, so this ordering is
    the same as that of the paired t statistic ``|t|``: it is the exact permutation version of
    the paired t-test (SciPy, which would give the t-distribution version, is not installed).
    Up to 16 pairs all flips are enumerated (exact); above, 65 536 flips are drawn with a fixed
    seed and ``p = (1 + hits) / (1 + draws)``.

    Args:
        a: ``[n]`` values of one variant, one per seed.
        b: ``[n]`` values of the other variant, same seed order.

    Returns:
        The p-value; NaN for fewer than two pairs; 1.0 when every difference is zero.

    Raises:
        ExperimentStatsError: shapes differ or values are not finite.
    """
    x, y = _finite_1d(a, "paired_test a"), _finite_1d(b, "paired_test b")
    if x.shape != y.shape:
        raise ExperimentStatsError(f"paired_test needs equal lengths, got {x.size} and {y.size}")
    n = x.size
    if n < 2:
        return float("nan")
    d = x - y
    if not d.any():
        return 1.0
    observed = abs(d.sum())
    # Sums of the same numbers in another order can differ in the last bits: a flip whose sum
    # equals the observed one mathematically must count as ">=".
    slack = 1e-12 * np.abs(d).sum()
    if n <= _EXACT_MAX_N:
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)[None, :]) & 1  # [2ⁿ, n]
        flipped = np.abs((1 - 2 * bits) @ d)  # [2ⁿ]
        return float(np.mean(flipped >= observed - slack))
    rng = np.random.default_rng(0)  # fixed: the test is a function of the data only
    signs = rng.integers(0, 2, size=(_SAMPLED_FLIPS, n)) * 2 - 1
    hits = int((np.abs(signs @ d) >= observed - slack).sum())
    return (1 + hits) / (1 + _SAMPLED_FLIPS)


def _seed_values(rows: pd.DataFrame) -> pd.Series:
    """``value`` indexed by ``seed`` for one (variant, split, metric) group."""
    return rows.set_index("seed")["value"].astype(np.float64)


def _paired(
    variant: str, other: str, mine: pd.Series, theirs: pd.Series, split: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Values of two variants on the seeds where both are finite, in seed order.

    Raises:
        ExperimentStatsError: the variants were not run with the same seeds.
    """
    if set(mine.index) != set(theirs.index):
        raise ExperimentStatsError(
            f"variant {variant!r} has seeds {sorted(mine.index.tolist())} but {other!r} has "
            f"{sorted(theirs.index.tolist())} (split {split!r}, metric {metric!r}); paired "
            "comparisons need the same seeds"
        )
    seeds = sorted(mine.index.tolist())
    x, y = mine.loc[seeds].to_numpy(), theirs.loc[seeds].to_numpy()
    both = np.isfinite(x) & np.isfinite(y)
    return x[both], y[both]


def summarise(
    results: pd.DataFrame,
    *,
    baseline: str = "baseline",
    reference: str = "ica",
    n_resamples: int,
    seed: int,
) -> pd.DataFrame:
    """Per (variant, split, metric): mean over seeds, bootstrap CI, paired comparisons.

    Args:
        results: long table ``variant, seed, split, metric, value``, one row per run and metric.
            A NaN ``value`` (metric unavailable for that run, e.g. no Java for METEOR) is left
            out of every statistic; ``n_seeds`` counts the finite values only, and paired
            statistics use the seeds where both variants are finite.
        baseline: the variant without ICA; must be in ``results``.
        reference: the full ICA variant; ``delta_vs_ica`` is NaN where it is absent.
        n_resamples: bootstrap resamples for the CI.
        seed: seed of the bootstrap (the same for every group, so a group's CI does not depend
            on which other groups the table holds).

    Returns:
        Columns :data:`SUMMARY_COLUMNS`, groups in order of first appearance: ``mean``,
        ``ci_low``/``ci_high`` (percentile bootstrap, :func:`bootstrap_ci`), ``n_seeds``;
        ``delta_vs_baseline`` / ``delta_vs_ica`` = mean over seeds of ``variant − other``, in
        the metric's units whatever its direction; ``wins_vs_baseline`` = seeds on which the
        variant is strictly better than the baseline (lower for :data:`LOWER_IS_BETTER`
        metrics, higher otherwise); ``p_value`` = :func:`paired_test` against the baseline. The
        baseline's own row has delta 0, wins 0 and p NaN. Where the baseline (or reference)
        lacks the split/metric, or no seed is finite for both, the paired columns are NaN
        (``wins`` <NA>).

    Raises:
        ExperimentStatsError: missing columns, duplicate (variant, seed, split, metric) rows,
            an absent baseline, or a variant whose seeds differ from the baseline's or the
            reference's for a split/metric (the message names variant and seeds).
    """
    require_columns(results, "results", RESULT_COLUMNS, error=ExperimentStatsError)
    keys = ["variant", "split", "metric"]
    dup = results.duplicated(["variant", "seed", "split", "metric"], keep=False)
    if dup.any():
        first = results[dup].iloc[0]
        raise ExperimentStatsError(
            f"results has {int(dup.sum())} duplicated (variant, seed, split, metric) rows, e.g. "
            f"{first['variant']!r} seed {first['seed']} {first['split']!r} {first['metric']!r}"
        )
    if baseline not in set(results["variant"]):
        raise ExperimentStatsError(
            f"baseline variant {baseline!r} is not in results (variants: "
            f"{sorted(pd.unique(results['variant']).tolist())})"
        )
    groups = {key: _seed_values(rows) for key, rows in results.groupby(keys, sort=False)}
    out = []
    for (variant, split, metric), values in groups.items():
        finite = values.to_numpy()[np.isfinite(values.to_numpy())]
        n = int(finite.size)
        mean = float(finite.mean()) if n else float("nan")
        low, high = (
            bootstrap_ci(finite, n_resamples=n_resamples, seed=seed) if n else (np.nan, np.nan)
        )
        row = {
            "variant": variant,
            "split": split,
            "metric": metric,
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "n_seeds": n,
            "delta_vs_baseline": np.nan,
            "wins_vs_baseline": pd.NA,
            "p_value": np.nan,
            "delta_vs_ica": np.nan,
        }
        base = groups.get((baseline, split, metric))
        if base is not None:
            x, y = _paired(variant, baseline, values, base, split, metric)
            if variant == baseline:
                row.update(delta_vs_baseline=0.0, wins_vs_baseline=0)
            elif x.size:
                better = x < y if lower_is_better(metric) else x > y
                row.update(
                    delta_vs_baseline=float((x - y).mean()),
                    wins_vs_baseline=int(better.sum()),
                    p_value=paired_test(x, y),
                )
        ref = groups.get((reference, split, metric))
        if ref is not None:
            x, y = _paired(variant, reference, values, ref, split, metric)
            if x.size:
                row["delta_vs_ica"] = float((x - y).mean())
        out.append(row)
    frame = pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))
    frame["n_seeds"] = frame["n_seeds"].astype("int64")
    frame["wins_vs_baseline"] = frame["wins_vs_baseline"].astype("Int64")
    return frame
