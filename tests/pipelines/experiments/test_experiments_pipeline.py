"""The ``experiments`` pipeline: its nodes and datasets, the registry, a run, the catalog."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from experiment_data import experiment_sections, make_experiment_dataset
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import ParquetDataset
from project_conf import PROJECT

from ica_captioning.experiments.stats import RESULT_COLUMNS, SUMMARY_COLUMNS
from ica_captioning.pipelines.experiments import nodes
from ica_captioning.pipelines.experiments.pipeline import (
    configured_variants,
    create_experiments_pipeline,
)

VARIANTS = {
    "baseline": {"masks": "true", "train_overrides": {"lambda_aux": 0.0}},
    "ica_lambda_0.01": {"masks": "random", "train_overrides": {"lambda_aux": 0.01}},
}
UPSTREAM_TABLES = {
    "images",
    "captions",
    "encoded_captions",
    "detections",
    "pseudo_labels",
    "vocabulary",
    "pretrained_encoder",
}
PARAMS = {f"params:{s}" for s in ("train", "dataset", "matching", "evaluation", "experiments")}
REPORTS = {"experiment_results", "experiment_histories", "experiment_summary", "experiment_figure"}


def test_pipeline_nodes_and_datasets():
    pipe = create_experiments_pipeline(list(VARIANTS))
    assert {n.name for n in pipe.nodes} == {
        "prepare_experiment_evaluation",
        "experiments.baseline.run_variant",
        "experiments.ica_lambda_0_01.run_variant",
        "collect_experiment_results",
        "collect_experiment_histories",
        "summarise_experiments",
        "plot_experiments",
    }
    assert pipe.inputs() == UPSTREAM_TABLES | PARAMS
    per_variant = {f"experiments.{v}.{k}" for v in ("baseline", "ica_lambda_0_01")
                   for k in ("results", "histories")}  # fmt: skip
    # Terminal outputs; experiment_results also feeds the summary and the figure.
    assert pipe.outputs() == REPORTS - {"experiment_results"}
    assert REPORTS | per_variant <= pipe.datasets()
    assert all("experiments" in n.tags for n in pipe.nodes)
    run = next(n for n in pipe.nodes if n.name == "experiments.ica_lambda_0_01.run_variant")
    assert run.namespace == "experiments.ica_lambda_0_01"
    assert set(run.outputs) == {
        f"experiments.ica_lambda_0_01.{k}" for k in ("results", "histories")
    }
    assert "experiments.ica_lambda_0_01" in run.tags
    assert run.func.keywords == {"variant": "ica_lambda_0.01"}  # the real name, dot included
    # A grid in parts: one variant with the split it is evaluated on, then the reports.
    part = pipe.only_nodes_with_tags("experiments.ica_lambda_0_01")
    assert {n.name for n in part.nodes} == {
        "prepare_experiment_evaluation",
        "experiments.ica_lambda_0_01.run_variant",
    }
    reports = pipe.only_nodes_with_tags("experiments_report")
    assert {n.name for n in reports.nodes} == {
        "collect_experiment_results",
        "collect_experiment_histories",
        "summarise_experiments",
        "plot_experiments",
    }
    assert create_experiments_pipeline([]).nodes == []


def test_registered_with_upstream_and_left_out_of_default():
    from kedro.framework.project import configure_project, pipelines

    configure_project("ica_captioning")
    names = {n.name for n in pipelines["experiments"].nodes}
    assert {f"experiments.{v}.run_variant" for v in ("baseline", "ica", "ica_lambda_0_01",
                                                     "ica_degraded_25")} <= names  # fmt: skip
    assert len([n for n in names if n.endswith(".run_variant")]) == 11
    assert {"pretrain_encoder", "summarise_experiments"} <= names
    # Upstream tables come from the stages in the pipeline, not from outside.
    assert not (pipelines["experiments"].inputs() & UPSTREAM_TABLES)
    default = {n.name for n in pipelines["__default__"].nodes}
    assert not {n for n in names if "experiment" in n} & default
    assert "pretrain_encoder" in default


def test_configured_variants_follow_the_configuration(tmp_path):
    assert configured_variants(conf_source=PROJECT / "conf")[:2] == ["baseline", "ica"]
    conf = tmp_path / "conf"
    shutil.copytree(PROJECT / "conf" / "base", conf / "base")
    (conf / "local").mkdir()
    extra = {"experiments": {"variants": {"ica_boxes_lambda_1": {
        "masks": "boxes", "train_overrides": {"lambda_aux": 1.0}}}}}  # fmt: skip
    (conf / "local" / "parameters_experiments.yml").write_text(yaml.safe_dump(extra))
    names = configured_variants("local", conf)
    assert names[-1] == "ica_boxes_lambda_1" and len(names) == 12
    assert len(configured_variants("base", conf)) == 11
    # An environment without a folder falls back to conf/base.
    assert len(configured_variants("nosuchenv", conf)) == 11


def test_variant_nodes_and_parameters_must_agree(tmp_path):
    sections = experiment_sections(tmp_path, str(tmp_path), VARIANTS, [0])
    with pytest.raises(ValueError, match="node for variant 'ica_boxes'.*keep the two in step"):
        nodes.run_variant(*[None] * 11, *(sections[k] for k in
                          ("train", "dataset", "matching", "evaluation", "experiments")),
                          variant="ica_boxes")  # fmt: skip
    table = pd.DataFrame({"variant": ["baseline"], "seed": [0], "split": ["test"],
                          "metric": ["BLEU-4"], "value": [0.1]})  # fmt: skip
    with pytest.raises(ValueError, match=r"\['ica_lambda_0.01'\] have no results"):
        nodes.collect_results(sections["experiments"], table)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments_pipeline")
    data = make_experiment_dataset(root / "data")
    sections = experiment_sections(root, data["images_dir"], VARIANTS, [0, 1])
    out = root / "out"
    datasets = {
        **{k: MemoryDataset(data[k]) for k in UPSTREAM_TABLES - {"pretrained_encoder"}},
        "pretrained_encoder": MemoryDataset({"state_dict": None, "skipped": "weights: none"}),
        **{f"params:{k}": MemoryDataset(v) for k, v in sections.items()},
        "experiment_figure": MatplotlibDataset(filepath=str(out / "experiment_figure.png")),
    }
    for name in ("experiment_results", "experiment_histories", "experiment_summary"):
        datasets[name] = ParquetDataset(filepath=str(out / f"{name}.parquet"))
    SequentialRunner().run(create_experiments_pipeline(list(VARIANTS)), DataCatalog(datasets))
    return out


@pytest.mark.slow
def test_pipeline_run_writes_the_reports(pipeline_run):
    results = pd.read_parquet(pipeline_run / "experiment_results.parquet")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert results[["variant", "seed"]].drop_duplicates().values.tolist() == [
        ["baseline", 0], ["baseline", 1], ["ica_lambda_0.01", 0], ["ica_lambda_0.01", 1]
    ]  # fmt: skip
    iou = results[results["metric"] == "mask_iou"].set_index(["variant", "seed"])["value"]
    assert (iou.loc["baseline"] == 1.0).all() and (iou.loc["ica_lambda_0.01"] < 1.0).all()
    summary = pd.read_parquet(pipeline_run / "experiment_summary.parquet")
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert set(summary["variant"]) == set(VARIANTS)
    histories = pd.read_parquet(pipeline_run / "experiment_histories.parquet")
    assert set(zip(histories["variant"], histories["seed"])) == set(
        zip(results["variant"], results["seed"])
    )
    assert (pipeline_run / "experiment_figure.png").stat().st_size > 5000


def test_project_catalog_has_the_experiment_datasets(tmp_path):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PROJECT / "conf" / "base", tmp_path / "conf" / "base")
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()
    bootstrap_project(tmp_path)
    with KedroSession.create(project_path=tmp_path) as session:
        catalog = session.load_context().catalog
        summary = pd.DataFrame({c: [1.0] for c in SUMMARY_COLUMNS}).assign(variant="ica")
        catalog.save("experiment_summary", summary)
        assert catalog.load("experiment_summary")["variant"].tolist() == ["ica"]
        per_variant = catalog.get("experiments.ica_lambda_0_01.results")
        figure = catalog.get("experiment_figure")
    saved = list((tmp_path / "data" / "08_reporting").glob("*/experiment_summary.parquet/*"))
    assert len(saved) == 1  # versioned, under the run's dataset scope
    scope = saved[0].parents[1].name
    assert scope.startswith("synthetic-")
    path = Path(per_variant._filepath)
    assert path.name == "ica_lambda_0_01_results.parquet"
    assert path.parent.name == "experiments" and path.parents[1].name == scope
    assert "08_reporting" in str(figure._filepath) and figure._version is not None
