from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from ica_captioning.experiments.stats import (
    SUMMARY_COLUMNS,
    ExperimentStatsError,
    bootstrap_ci,
    lower_is_better,
    paired_test,
    summarise,
)

# ------------------------------------------------------------------ bootstrap


def brute_force_ci(values, n_resamples, confidence, seed):
    """Loop reference with the same draws; percentile by hand (linear interpolation)."""
    values = list(values)
    n = len(values)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    means = sorted(sum(values[j] for j in row) / n for row in idx.tolist())

    def percentile(q):
        h = (n_resamples - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, n_resamples - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    return percentile((1 - confidence) / 2), percentile((1 + confidence) / 2)


def test_bootstrap_matches_brute_force():
    low, high = bootstrap_ci(np.array([1.0, 2.0, 3.0]), n_resamples=1000, seed=7)
    ref_low, ref_high = brute_force_ci([1.0, 2.0, 3.0], 1000, 0.95, 7)
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)
    assert 1.0 <= low <= 2.0 <= high <= 3.0
    assert low < high


def test_bootstrap_confidence_and_other_values():
    x = np.array([0.31, 0.35, 0.29, 0.4, 0.33])
    low90, high90 = bootstrap_ci(x, n_resamples=500, confidence=0.9, seed=1)
    ref = brute_force_ci(x, 500, 0.9, 1)
    assert (low90, high90) == pytest.approx(ref, abs=1e-12)
    low99, high99 = bootstrap_ci(x, n_resamples=500, confidence=0.99, seed=1)
    assert low99 <= low90 and high99 >= high90


def test_bootstrap_single_value_and_errors():
    assert bootstrap_ci(np.array([0.7]), n_resamples=100, seed=0) == (0.7, 0.7)
    with pytest.raises(ExperimentStatsError, match="non-finite"):
        bootstrap_ci(np.array([1.0, np.nan]), n_resamples=100, seed=0)
    with pytest.raises(ExperimentStatsError, match="at least one value"):
        bootstrap_ci(np.array([]), n_resamples=100, seed=0)
    with pytest.raises(ExperimentStatsError, match="n_resamples"):
        bootstrap_ci(np.array([1.0, 2.0]), n_resamples=0, seed=0)
    with pytest.raises(ExperimentStatsError, match="confidence"):
        bootstrap_ci(np.array([1.0, 2.0]), n_resamples=10, confidence=1.0, seed=0)


# ------------------------------------------------------------------ paired test


def t_statistic(d):
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean / (sd / math.sqrt(n))


def test_paired_test_equals_enumerated_t_statistics():
    a = [1.0, 2.0, 3.5, 4.0, 2.2]
    b = [0.5, 2.5, 2.0, 3.0, 1.9]
    d = [x - y for x, y in zip(a, b)]  # 0.5, -0.5, 1.5, 1.0, 0.3
    t_obs = t_statistic(d)
    # mean 0.56; squared deviations .0036 + 1.1236 + .8836 + .1936 + .0676 = 2.272, / 4 = 0.568
    assert t_obs == pytest.approx(0.56 / (math.sqrt(0.568) / math.sqrt(5)))
    flips = [
        t_statistic([s * x for s, x in zip(signs, d)])
        for signs in itertools.product((1, -1), repeat=5)
    ]
    p_ref = sum(abs(t) >= abs(t_obs) - 1e-12 for t in flips) / len(flips)
    assert paired_test(np.array(a), np.array(b)) == pytest.approx(p_ref)
    assert paired_test(np.array(b), np.array(a)) == pytest.approx(p_ref)  # two-sided


def test_paired_test_hand_values():
    # all five differences positive: only the identity and the full flip reach |sum| = 15
    assert paired_test(np.arange(1.0, 6.0) + 10, np.full(5, 10.0)) == pytest.approx(2 / 32)
    # d = (0.2, -0.1, 0.2): |sum| >= 0.3 for (+,+,+), (-,-,-), (+,-,+), (-,+,-) -> 4 / 8
    assert paired_test(np.array([1.2, 1.0, 1.1]), np.array([1.0, 1.1, 0.9])) == pytest.approx(0.5)


def test_paired_test_edge_cases():
    assert math.isnan(paired_test(np.array([1.0]), np.array([0.0])))
    assert paired_test(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    with pytest.raises(ExperimentStatsError, match="equal lengths"):
        paired_test(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(ExperimentStatsError, match="non-finite"):
        paired_test(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_paired_test_sampled_flips_for_many_seeds():
    rng = np.random.default_rng(0)
    b = rng.normal(size=20)
    # every difference positive: exact p = 2 / 2**20; the sampled estimate is (1 + hits) / 65537
    p = paired_test(b + 1.0, b)
    assert 1 / 65537 <= p < 1e-3
    assert p == paired_test(b + 1.0, b)  # fixed internal seed
    noise = rng.normal(size=20)
    assert paired_test(b + noise, b) > 0.01


# ------------------------------------------------------------------ summarise


def long_table(values):
    """{(variant, metric): [seed0, seed1, seed2]} -> long table on split 'test'."""
    rows = [
        {"variant": v, "seed": s, "split": "test", "metric": m, "value": x}
        for (v, m), xs in values.items()
        for s, x in enumerate(xs)
    ]
    return pd.DataFrame(rows)


VALUES = {
    ("baseline", "cider"): [1.0, 1.1, 0.9],
    ("ica", "cider"): [1.2, 1.0, 1.1],
    ("shuffled", "cider"): [1.0, 1.2, 0.8],
    ("baseline", "chair_i"): [0.10, 0.12, 0.11],
    ("ica", "chair_i"): [0.08, 0.13, 0.09],
    ("shuffled", "chair_i"): [0.12, 0.12, np.nan],
}


def test_summarise_hand_computed():
    results = long_table(VALUES)
    out = summarise(results, n_resamples=200, seed=3)
    assert list(out.columns) == list(SUMMARY_COLUMNS)
    assert out[["variant", "metric"]].apply(tuple, axis=1).tolist() == [
        ("baseline", "cider"),
        ("ica", "cider"),
        ("shuffled", "cider"),
        ("baseline", "chair_i"),
        ("ica", "chair_i"),
        ("shuffled", "chair_i"),
    ]
    row = out.set_index(["variant", "metric"])
    expected = {
        # mean, n, delta_vs_baseline, wins, delta_vs_ica
        ("baseline", "cider"): (1.0, 3, 0.0, 0, -0.1),
        ("ica", "cider"): (1.1, 3, 0.1, 2, 0.0),  # diffs 0.2, -0.1, 0.2
        ("shuffled", "cider"): (1.0, 3, 0.0, 1, -0.1),  # diffs 0, 0.1, -0.1: a tie is no win
        ("baseline", "chair_i"): (0.11, 3, 0.0, 0, 0.01),
        ("ica", "chair_i"): (0.1, 3, -0.01, 2, 0.0),  # lower wins: -0.02, +0.01, -0.02
        ("shuffled", "chair_i"): (0.12, 2, 0.01, 0, 0.015),  # seeds 0, 1 only (seed 2 is NaN)
    }
    for key, (mean, n, delta, wins, delta_ica) in expected.items():
        r = row.loc[key]
        assert r["mean"] == pytest.approx(mean)
        assert r["n_seeds"] == n
        assert r["delta_vs_baseline"] == pytest.approx(delta, abs=1e-12)
        assert r["wins_vs_baseline"] == wins
        assert r["delta_vs_ica"] == pytest.approx(delta_ica, abs=1e-12)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
    for metric in ("cider", "chair_i"):
        assert math.isnan(row.loc[("baseline", metric), "p_value"])
    assert row.loc[("ica", "cider"), "p_value"] == pytest.approx(0.5)  # see hand values above
    # CI is bootstrap_ci of the finite values with the summary's seed
    ci = bootstrap_ci(np.array([0.12, 0.12]), n_resamples=200, seed=3)
    assert (
        row.loc[("shuffled", "chair_i"), "ci_low"],
        row.loc[("shuffled", "chair_i"), "ci_high"],
    ) == ci
    assert out["n_seeds"].dtype == np.int64
    assert str(out["wins_vs_baseline"].dtype) == "Int64"


def test_lower_is_better_names():
    assert lower_is_better("chair_i") and lower_is_better("CHAIR-s")
    assert not lower_is_better("cider") and not lower_is_better("attention_correctness")


def test_summarise_seed_mismatch_names_variant_and_seeds():
    results = long_table(VALUES)
    results.loc[(results["variant"] == "shuffled") & (results["seed"] == 2), "seed"] = 5
    with pytest.raises(
        ExperimentStatsError,
        match=r"'shuffled' has seeds \[0, 1, 5\] but 'baseline' has \[0, 1, 2\]",
    ):
        summarise(results, n_resamples=50, seed=0)


def test_summarise_without_reference_and_errors():
    results = long_table({k: v for k, v in VALUES.items() if k[0] != "ica"})
    out = summarise(results, n_resamples=50, seed=0)
    assert out["delta_vs_ica"].isna().all()
    with pytest.raises(ExperimentStatsError, match="baseline variant 'baseline' is not in results"):
        summarise(results[results["variant"] != "baseline"], n_resamples=50, seed=0)
    with pytest.raises(ExperimentStatsError, match=r"lacks column\(s\) \['value'\]"):
        summarise(results.drop(columns="value"), n_resamples=50, seed=0)
    with pytest.raises(ExperimentStatsError, match="duplicated"):
        summarise(pd.concat([results, results.head(1)]), n_resamples=50, seed=0)


def test_summarise_metric_missing_for_baseline():
    results = long_table({**VALUES, ("ica", "ica_loss"): [0.5, 0.4, 0.45]})
    row = (
        summarise(results, n_resamples=50, seed=0)
        .set_index(["variant", "metric"])
        .loc[("ica", "ica_loss")]
    )
    assert row["mean"] == pytest.approx(0.45)
    assert math.isnan(row["delta_vs_baseline"]) and pd.isna(row["wins_vs_baseline"])
    assert row["delta_vs_ica"] == 0.0
