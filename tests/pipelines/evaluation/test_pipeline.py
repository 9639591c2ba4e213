import math

import numpy as np
import pandas as pd
import pytest
from project_conf import section

from ica_captioning.params import ParameterError
from ica_captioning.pipelines.evaluation import nodes as ev
from ica_captioning.reports import TABLE1_METRICS
from ica_captioning.reports import evaluation as report


@pytest.fixture(scope="module")
def run_outputs(evaluation_run):
    return evaluation_run


@pytest.mark.slow
def test_pipeline_writes_all_reports(run_outputs, eval_inputs):
    out = run_outputs
    test_ids = set(eval_inputs["images"].query("split == 'test'")["image_id"])
    caps = pd.read_parquet(out / "caption_metrics.parquet")
    assert list(caps.columns[:6]) == ["dataset", "variant", "split", "metric", "value", "run_id"]
    assert set(caps["variant"]) == {"baseline", "ica"}
    assert (caps["run_id"] == "test-run").all() and (caps["split"] == "test").all()
    assert (caps["num_images"] == len(test_ids)).all()
    by = caps.set_index(["variant", "metric"])
    for variant in ("baseline", "ica"):
        assert np.isfinite(by.loc[(variant, "BLEU-1"), "value"])
        assert np.isfinite(by.loc[(variant, "CIDEr"), "value"])
        assert 0 <= by.loc[(variant, "CHAIR-s"), "value"] <= 1 or math.isnan(
            by.loc[(variant, "CHAIR-s"), "value"]
        )
        assert by.loc[(variant, "METEOR"), "status"] == "disabled"
        # SPICE cannot run here (no CoreNLP jars / Java 17): NaN with a reason, never a crash.
        spice = by.loc[(variant, "SPICE")]
        assert math.isnan(spice["value"]) and spice["reason"]

    ground = pd.read_parquet(out / "grounding_metrics.parquet")
    assert {"captions", "masks", "count"} <= set(ground.columns)
    combos = set(zip(ground["captions"], ground["masks"]))
    assert combos == {
        ("generated", "pseudo_labels"),
        ("reference", "pseudo_labels"),
        ("generated", "ground_truth"),
        ("reference", "ground_truth"),
    }
    ref_pl = ground.query(
        "captions == 'reference' and masks == 'pseudo_labels' and variant == 'ica' "
        "and metric == 'attention_correctness'"
    )
    # Every pseudo-label of a test caption is scored once.
    n_pl = eval_inputs["pseudo_labels"]["image_id"].isin(test_ids).sum()
    assert int(ref_pl["count"].iloc[0]) == n_pl > 0
    assert 0 <= ref_pl["value"].iloc[0] <= 1

    comp = pd.read_parquet(out / "comparison.parquet")
    assert comp["model"].tolist() == ["Show-Attend-Tell", "+ICA Loss", "Δ (+ICA − SAT)"]
    assert list(comp.columns[4 : 4 + len(TABLE1_METRICS)]) == TABLE1_METRICS
    np.testing.assert_allclose(comp.loc[2, "BLEU-4"], comp.loc[1, "BLEU-4"] - comp.loc[0, "BLEU-4"])

    grid = eval_inputs["matching"]["grid_size"]
    gen = pd.read_parquet(out / "ica_generated.parquet")
    assert set(gen["image_id"]) == test_ids
    for toks, att in zip(gen["tokens"], gen["attention"]):
        maps = np.asarray(att).reshape(len(toks), grid * grid)
        np.testing.assert_allclose(maps.sum(1), 1.0, rtol=1e-4)

    figs = sorted(p.name for p in (out / "attention").iterdir())
    assert len(figs) == 2 and all(f.startswith("image_") and f.endswith(".png") for f in figs)
    assert (out / "curves.png").stat().st_size > 1000


def test_select_split_errors(eval_inputs):
    tables = eval_inputs["images"], eval_inputs["captions"], eval_inputs["encoded_captions"]
    with pytest.raises(ValueError, match="no image of that split"):
        report.select_split(*tables, split="holdout", max_images=None)
    without_val = eval_inputs["images"].query("split != 'val'")
    with pytest.raises(ValueError, match="no image of that split"):
        ev.select_split(without_val, *tables[1:], section("evaluation", split="val"))
    # The node accepts only the configured splits, and says which key is wrong.
    with pytest.raises(ParameterError, match=r"evaluation\.split"):
        ev.select_split(*tables, section("evaluation", split="holdout"))
    images, refs = ev.select_split(*tables, section("evaluation", split="test", max_images=2))
    assert len(images) == 2 and set(refs["image_id"]) == set(images["image_id"])
    assert {"raw", "tokens", "ids"} <= set(refs.columns)


def _test_split(eval_inputs):
    return ev.select_split(
        eval_inputs["images"],
        eval_inputs["captions"],
        eval_inputs["encoded_captions"],
        section("evaluation", split="test"),
    )


def test_prepare_objects_without_instances_falls_back_to_detections(eval_inputs):
    images, refs = _test_split(eval_inputs)
    dataset = {**eval_inputs["dataset"], "instances": ["/nonexistent/instances.json"]}
    grids, truth = ev.prepare_objects(
        eval_inputs["images"], eval_inputs["detections"], images, refs, dataset,
        eval_inputs["matching"], section("evaluation"),
    )  # fmt: skip
    assert set(grids["masks"]) == {"pseudo_labels"}
    assert (truth["source"] == "detections").all()
    assert "not found" in truth["status"].iloc[0]
    # With the instances present, ground truth is used and equals the annotations.
    grids, truth = ev.prepare_objects(
        eval_inputs["images"], eval_inputs["detections"], images, refs, eval_inputs["dataset"],
        eval_inputs["matching"], section("evaluation"),
    )  # fmt: skip
    assert set(grids["masks"]) == {"pseudo_labels", "ground_truth"}
    assert (truth["source"] == "ground_truth").all()
    dets = eval_inputs["detections"].dropna(subset=["class_name"])
    for iid, classes in zip(truth["image_id"], truth["classes"]):
        assert set(dets[dets["image_id"] == iid]["class_name"]) <= set(classes)


def test_make_run_id():
    assert ev.make_run_id(section("evaluation", run_id="abc")) == "abc"
    rid = ev.make_run_id(section("evaluation", run_id=None))
    assert rid.endswith("Z") and rid[4] == "-" and rid.count(".") == 3


def test_grounding_rows_exist_when_no_word_names_an_object(eval_inputs):
    images, refs = _test_split(eval_inputs)
    grids, _ = ev.prepare_objects(
        eval_inputs["images"], eval_inputs["detections"], images, refs, eval_inputs["dataset"],
        eval_inputs["matching"], section("evaluation"),
    )  # fmt: skip
    cells = eval_inputs["matching"]["grid_size"] ** 2
    generated = pd.DataFrame(
        {
            "image_id": images["image_id"],
            "tokens": [["a", "thing"]] * len(images),
            "grid_size": eval_inputs["matching"]["grid_size"],
            "attention": [np.full(2 * cells, 1 / cells, np.float32)] * len(images),
        }
    )
    no_refs = pd.DataFrame(columns=["caption_id", "image_id", "tokens", "grid_size", "attention"])
    report, words = ev.grounding_metrics_of(
        eval_inputs["pseudo_labels"], grids, eval_inputs["dataset"], eval_inputs["matching"],
        section("evaluation"), "r",
        generated__baseline=generated, reference__baseline=no_refs,
        generated__ica=generated, reference__ica=no_refs,
    )  # fmt: skip
    assert words.empty
    assert len(report) == 2 * 4 * 4  # variants x (captions, masks) x metrics
    assert (report["count"] == 0).all() and report["value"].isna().all()
