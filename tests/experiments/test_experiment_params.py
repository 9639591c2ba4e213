"""``params:experiments``: conf parses, bad keys fail with full names, the grid resolves."""

from __future__ import annotations

import pytest
from project_conf import conf_params, section

from ica_captioning.experiments import evaluation as run_evaluation
from ica_captioning.experiments import grid
from ica_captioning.metrics.grounding import WORD_METRICS
from ica_captioning.params import ParameterError
from ica_captioning.params.experiments import (
    CAPTION_METRIC_NAMES,
    ExperimentsParams,
    FigureParams,
    safe_name,
)
from ica_captioning.reports.tables import (
    EXTRA_CAPTION_METRICS,
    TABLE1_METRICS,
    grounding_column,
)

ISSUE_VARIANTS = [
    "baseline",
    "ica",
    "ica_shuffled_masks",
    "ica_random_masks",
    "ica_boxes",
    "ica_degraded_75",
    "ica_degraded_50",
    "ica_degraded_25",
    "ica_lambda_0.01",
    "ica_lambda_1",
    "ica_scaled",
]


def _raw(**changes):
    return section("experiments", "base", **changes)


def _error(raw) -> list[str]:
    with pytest.raises(ParameterError) as err:
        ExperimentsParams.parse(raw, "experiments")
    return str(err.value).splitlines()[1:]


@pytest.mark.parametrize("env", ["base", "gpu"])
def test_conf_defines_the_issue_grid(env):
    exp = ExperimentsParams.parse(conf_params(env)["experiments"], "experiments")
    assert list(exp.variants) == ISSUE_VARIANTS
    assert exp.seeds == [0, 1, 2] and exp.num_runs == 33
    masks = {name: v.masks for name, v in exp.variants.items()}
    assert masks["baseline"] == masks["ica"] == masks["ica_scaled"] == "true"
    assert masks["ica_shuffled_masks"] == "shuffled" and masks["ica_boxes"] == "boxes"
    assert masks["ica_degraded_25"] == "degraded_25" and masks["ica_random_masks"] == "random"
    overrides = {name: v.train_overrides for name, v in exp.variants.items()}
    assert overrides["baseline"] == {"lambda_aux": 0.0}
    assert overrides["ica_lambda_0.01"] == {"lambda_aux": 0.01}
    assert overrides["ica_lambda_1"] == {"lambda_aux": 1.0}
    assert overrides["ica_scaled"] == {"ica_mapping": "scaled"}
    assert exp.tracking.enabled is False


def test_every_run_of_the_conf_grid_resolves():
    params = conf_params()
    exp = ExperimentsParams.parse(params["experiments"], "experiments")
    specs = grid.plan_grid(exp, params["train"])
    assert len(specs) == 33
    by = {(s.variant, s.seed): s.params for s in specs}
    assert by[("baseline", 1)].lambda_aux == 0.0
    assert by[("ica", 2)].lambda_aux == params["train"]["lambda_aux"]
    assert by[("ica_scaled", 0)].ica_mapping == "scaled"
    # The budget applies to all; the seed varies, the encoder (and its init seed) does not.
    assert {p.epochs for p in by.values()} == {exp.train_overrides["epochs"]}
    assert {p.seed for p in by.values()} == {0, 1, 2}
    assert len({p.encoder for p in by.values()}) == 1
    assert by[("ica", 0)].encoder.init_seed == params["train"]["encoder"]["init_seed"]
    assert by[("ica_lambda_0.01", 1)].checkpoint_dir.endswith("ica_lambda_0_01/seed1")
    evaluation = run_evaluation.evaluation_params(params["evaluation"], exp)
    assert evaluation.split == exp.eval_split
    assert evaluation.metrics.meteor is False


def test_missing_and_unknown_keys_name_the_full_key():
    raw = _raw()
    del raw["seeds"]
    raw["tracking"].pop("uri")
    raw["variants"]["ica_boxes"].pop("masks")
    raw["variants"]["ica"]["train_overides"] = {}
    raw["stats"]["n_resample"] = 10
    lines = _error(raw)
    assert any(line.startswith("experiments.seeds: missing") for line in lines)
    assert any(line.startswith("experiments.tracking.uri: missing") for line in lines)
    assert any(line.startswith("experiments.variants.ica_boxes.masks: missing") for line in lines)
    assert "experiments.variants.ica.train_overides: unknown key" in lines
    assert "experiments.stats.n_resample: unknown key" in lines
    assert len(lines) == 5


def test_wrong_values_are_explained():
    raw = _raw()
    raw["variants"]["ica_boxes"]["masks"] = "bboxes"
    (line,) = _error(raw)
    assert line.startswith("experiments.variants.ica_boxes.masks: ") and "'degraded_75'" in line
    # Unquoted YAML `true` is the true masks; false is not a mask kind.
    raw["variants"]["ica_boxes"]["masks"] = True
    assert ExperimentsParams.parse(raw, "experiments").variants["ica_boxes"].masks == "true"
    raw["variants"]["ica_boxes"]["masks"] = False
    assert _error(raw)[0].startswith("experiments.variants.ica_boxes.masks: ")
    (line,) = _error(_raw(seeds=[0, 0]))
    assert line.startswith("experiments.seeds: ") and "distinct" in line
    (line,) = _error(_raw(seeds=[]))
    assert line.startswith("experiments.seeds: ")
    (line,) = _error(_raw(figure={"metric": "attention_corectness [reference/pseudo_labels]"}))
    assert line.startswith("experiments.figure.metric: ")
    (line,) = _error(_raw(evaluation_overrides={"split": "val"}))
    assert "experiments.eval_split" in line
    (line,) = _error(_raw(eval_split="holdout"))
    assert line.startswith("experiments.eval_split: ")


def test_the_grid_needs_a_baseline_and_distinct_namespaces():
    raw = _raw()
    raw["variants"].pop("baseline")
    (line,) = _error(raw)
    assert line.startswith("experiments.variants: ") and "'baseline'" in line
    raw = _raw()
    raw["variants"] = {"baseline": raw["variants"]["baseline"]}
    assert "at least one other" in _error(raw)[0]
    raw = _raw()
    raw["variants"]["ica_lambda_0_01"] = raw["variants"]["ica_lambda_0.01"]
    assert "share a Kedro namespace" in _error(raw)[0]
    raw = _raw()
    raw["variants"]["bad name"] = raw["variants"]["ica"]
    assert "bad name" in _error(raw)[0]
    assert safe_name("ica_lambda_0.01") == "ica_lambda_0_01"
    assert safe_name("a-b.c_d") == "a_b_c_d"


def test_bad_overrides_stop_before_training_with_the_variant_named():
    params = conf_params()
    raw = _raw()
    raw["variants"]["ica_boxes"]["train_overrides"] = {"decoder": {"hidden": 3}}
    exp = ExperimentsParams.parse(raw, "experiments")
    with pytest.raises(ParameterError) as err:
        grid.plan_grid(exp, params["train"])
    text = str(err.value)
    assert "experiments.variants.ica_boxes" in text and "train.decoder.hidden: unknown key" in text
    exp = ExperimentsParams.parse(_raw(train_overrides={"epochs": "many"}), "experiments")
    with pytest.raises(ParameterError, match=r"(?s)experiments.variants.baseline.*train\.epochs"):
        grid.plan_grid(exp, params["train"])
    exp = ExperimentsParams.parse(
        _raw(evaluation_overrides={"metrics": {"meteorr": True}}), "experiments"
    )
    with pytest.raises(ParameterError, match=r"evaluation\.metrics\.meteorr: unknown key"):
        run_evaluation.evaluation_params(params["evaluation"], exp)
    with pytest.raises(ParameterError, match="no variant 'nope'"):
        grid.resolve_run(exp, params["train"], "nope", 0)


def test_figure_metric_names_are_those_of_the_reports():
    assert set(CAPTION_METRIC_NAMES) == set(TABLE1_METRICS) | set(EXTRA_CAPTION_METRICS)
    for metric in WORD_METRICS:
        for captions in ("generated", "reference"):
            for masks in ("pseudo_labels", "ground_truth"):
                name = grounding_column(metric, captions, masks)
                assert FigureParams(metric=name).metric == name
    for name in CAPTION_METRIC_NAMES:
        assert FigureParams(metric=name).metric == name
