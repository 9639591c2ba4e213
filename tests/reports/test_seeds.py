"""seed_spread against statistics computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ica_captioning.reports.seeds import seed_spread


def comparison(bleu_base, bleu_ica, chair_base, chair_ica):
    rows = [
        ("baseline", bleu_base, chair_base),
        ("ica", bleu_ica, chair_ica),
        ("difference", bleu_ica - bleu_base, chair_ica - chair_base),
    ]
    return pd.DataFrame(
        {
            "dataset": "synthetic",
            "split": "test",
            "model": ["SAT", "+ICA", "Δ"],
            "variant": [r[0] for r in rows],
            "BLEU-4": [r[1] for r in rows],
            "CHAIR-i": [r[2] for r in rows],
            "run_id": "r",
        }
    )


def test_mean_std_and_wins_by_hand():
    tables = {
        0: comparison(0.10, 0.14, 0.80, 0.70),  # ICA better on both
        1: comparison(0.20, 0.18, 0.60, 0.65),  # ICA worse on both
        2: comparison(0.30, 0.31, 0.50, 0.40),  # ICA better on both
    }
    long, summary = seed_spread(tables)
    assert set(long.columns) == {"seed", "variant", "metric", "value"}
    assert len(long) == 3 * 3 * 2  # seeds × variants × metrics
    row = summary.set_index(["variant", "metric"])
    base = [0.10, 0.20, 0.30]
    assert row.loc[("baseline", "BLEU-4"), "mean"] == pytest.approx(0.2)
    # Sample standard deviation: sqrt(((-.1)² + 0 + .1²) / 2) = 0.1.
    assert row.loc[("baseline", "BLEU-4"), "std"] == pytest.approx(0.1)
    assert row.loc[("baseline", "BLEU-4"), "min"] == min(base)
    assert row.loc[("difference", "BLEU-4"), "mean"] == pytest.approx((0.04 - 0.02 + 0.01) / 3)
    assert row.loc[("difference", "BLEU-4"), "ica_better"] == 2
    # CHAIR: lower is better, so the negative differences of seeds 0 and 2 are wins.
    assert row.loc[("difference", "CHAIR-i"), "ica_better"] == 2
    assert math.isnan(row.loc[("ica", "BLEU-4"), "ica_better"])


def test_chance_levels_are_not_scored():
    t = comparison(0.1, 0.2, 0.5, 0.4)
    t["attention_correctness_chance [reference/ground_truth]"] = [0.05, 0.05, 0.0]
    _, summary = seed_spread({0: t})
    row = summary.set_index(["variant", "metric"])
    assert math.isnan(
        row.loc[
            ("difference", "attention_correctness_chance [reference/ground_truth]"), "ica_better"
        ]
    )


def test_nan_metrics_are_not_counted():
    t = comparison(0.1, 0.2, 0.5, 0.4)
    t["SPICE"] = float("nan")  # unavailable scorer
    _, summary = seed_spread({0: t, 1: t})
    spice = summary[(summary.variant == "difference") & (summary.metric == "SPICE")].iloc[0]
    assert spice["seeds"] == 0 and spice["ica_better"] == 0 and math.isnan(spice["mean"])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="at least one"):
        seed_spread({})
    with pytest.raises(ValueError, match="seed 3 has no 'variant'"):
        seed_spread({3: pd.DataFrame({"BLEU-4": [0.1]})})
