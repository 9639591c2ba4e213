"""The control-experiment grid end to end on a tiny dataset without Kedro: 2 variants × 2 seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from experiment_data import N_TEST, experiment_sections, grid_inputs, make_experiment_dataset
from kedro_datasets.matplotlib import MatplotlibDataset

from ica_captioning.experiments import grid, report
from ica_captioning.experiments.masks import MASK_KINDS
from ica_captioning.experiments.stats import RESULT_COLUMNS, SUMMARY_COLUMNS
from ica_captioning.matching.grid import unpack_grid
from ica_captioning.params.experiments import MaskKind

VARIANTS = {
    "baseline": {"masks": "true", "train_overrides": {"lambda_aux": 0.0}},
    "ica_degraded_50": {"masks": "degraded_50", "train_overrides": {}},
}
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    data = make_experiment_dataset(root / "data")
    sections = experiment_sections(root, data["images_dir"], VARIANTS, SEEDS)
    exp, evaluation, training = grid_inputs(data, sections)
    return {"root": root, "data": data, "sections": sections, "exp": exp,
            "evaluation": evaluation, "training": training}  # fmt: skip


@pytest.fixture(scope="module")
def grid_run(setup):
    return grid.run_grid(
        setup["exp"], setup["sections"]["train"], setup["training"], setup["evaluation"]
    )


@pytest.mark.slow
def test_results_long_table_has_every_run_and_metric(grid_run):
    results, histories = grid_run
    assert list(results.columns) == list(RESULT_COLUMNS)
    runs = results[["variant", "seed"]].drop_duplicates()
    assert runs.values.tolist() == [[v, s] for v in VARIANTS for s in SEEDS]
    assert not results.duplicated(["variant", "seed", "split", "metric"]).any()
    # Every run has the same metrics; mask_iou on the training split, the others on test.
    per_run = results.groupby(["variant", "seed"])["metric"].apply(frozenset)
    assert per_run.nunique() == 1
    metrics = set(per_run.iloc[0])
    assert {"BLEU-4", "CIDEr", "CHAIR-i", "mask_iou"} <= metrics
    for captions in ("generated", "reference"):
        for name in ("attention_correctness", "attention_iou_topk", "attention_iou_mass50"):
            assert f"{name} [{captions}/pseudo_labels]" in metrics
    # METEOR and SPICE are switched off by the evaluation overrides: left out, not NaN rows.
    assert "METEOR" not in metrics and "SPICE" not in metrics
    assert set(results.loc[results["metric"] == "mask_iou", "split"]) == {"train"}
    assert set(results.loc[results["metric"] != "mask_iou", "split"]) == {"test"}
    iou = results[results["metric"] == "mask_iou"].set_index(["variant", "seed"])["value"]
    assert (iou.loc["baseline"] == 1.0).all()
    assert (iou.loc["ica_degraded_50"].between(0.3, 0.7)).all()
    ac = results[results["metric"] == "attention_correctness [reference/pseudo_labels]"]
    assert ac["value"].between(0, 1).all()
    # Histories: one row per epoch (1 epoch) per run, keyed by variant and seed.
    assert list(histories.columns[:3]) == ["variant", "seed", "epoch"]
    assert len(histories) == len(VARIANTS) * len(SEEDS)


@pytest.mark.slow
def test_seeds_change_the_run_and_the_encoder_stays(grid_run, setup):
    results, _ = grid_run
    ac = results[(results["metric"] == "attention_correctness [reference/pseudo_labels]")]
    per_seed = ac.set_index(["variant", "seed"])["value"]
    # Different seeds train different decoders (the values differ), same encoder settings.
    assert per_seed.loc[("ica_degraded_50", 0)] != per_seed.loc[("ica_degraded_50", 1)]
    specs = grid.plan_grid(setup["exp"], setup["sections"]["train"])
    assert {s.params.encoder for s in specs} == {specs[0].params.encoder}
    assert [s.params.seed for s in specs] == SEEDS * len(VARIANTS)
    assert [s.index for s in specs] == list(range(1, len(specs) + 1))
    assert len({s.params.checkpoint_dir for s in specs}) == len(specs)


@pytest.mark.slow
def test_summary_and_figure(grid_run, setup, tmp_path):
    results, _ = grid_run
    exp = setup["exp"]
    summary = report.summarise_results(results, exp)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert len(summary) == len(results) // len(SEEDS)
    # NaN values (e.g. generated-caption grounding when no caption names the object) are left
    # out of the statistics; reference-caption grounding always has its words.
    assert summary["n_seeds"].between(0, len(SEEDS)).all()
    ref = summary[summary["metric"] == "attention_correctness [reference/pseudo_labels]"]
    assert (ref["n_seeds"] == len(SEEDS)).all()
    base = summary[summary["variant"] == "baseline"]
    assert (base["delta_vs_baseline"] == 0).all()
    gains = report.gain_table(results, exp)
    assert gains["variant"].tolist() == ["ica_degraded_50"]
    row = gains.iloc[0]
    assert row["group"] == "degraded masks" and row["series"]
    assert row["ci_low"] <= row["gain"] <= row["ci_high"] and row["n_seeds"] == len(SEEDS)
    path = tmp_path / "experiment_figure.png"
    MatplotlibDataset(filepath=str(path)).save(report.experiment_figure(results, exp))
    assert path.stat().st_size > 5000


def test_figure_metric_must_be_in_the_results(setup):
    results = pd.DataFrame(
        {
            "variant": ["baseline", "ica"],
            "seed": [0, 0],
            "split": ["test", "test"],
            "metric": ["BLEU-4", "BLEU-4"],
            "value": [0.1, 0.2],
        }
    )
    exp = setup["exp"]
    with pytest.raises(ValueError, match="not in the results of split 'test'.*BLEU-4"):
        report.gain_table(results, exp)


def test_training_labels_change_only_training_rows(setup):
    data = setup["data"]
    labels = data["pseudo_labels"]
    train_ids = set(data["images"].query("split == 'train'")["image_id"])
    out, iou = grid.training_labels(labels, data["images"], "boxes", seed=0)
    assert out is not labels and list(out.columns) == list(labels.columns)
    other = ~labels["image_id"].isin(train_ids)
    assert other.sum() == 2 * (3 + N_TEST)
    assert out.loc[other, "grid"].tolist() == labels.loc[other, "grid"].tolist()
    # A box holds its mask: the IoU is the mask's share of its box (cut corners of a square).
    assert 0.5 < iou <= 1.0
    out, iou = grid.training_labels(labels, data["images"], "shuffled", seed=3)
    assert out.loc[other, "grid"].tolist() == labels.loc[other, "grid"].tolist()
    changed = [
        not np.array_equal(unpack_grid(a, 4), unpack_grid(b, 4))
        for a, b in zip(out.loc[~other, "grid"], labels.loc[~other, "grid"])
    ]
    assert all(changed) and iou < 1.0
    same, iou = grid.training_labels(labels, data["images"], "true", seed=0)
    assert same is labels and iou == 1.0
    none, iou = grid.training_labels(labels, data["images"].assign(split="val"), "random", 0)
    assert none is labels and math.isnan(iou)


def test_mask_kinds_of_the_schema_are_those_of_the_transforms():
    assert MaskKind.__args__ == MASK_KINDS
