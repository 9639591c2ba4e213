"""The ingestion pipeline run with the project's real configuration on a tmp copy.

The catalog and ``params:*`` entries are built as ``KedroContext`` does (conf/base + env, soft
parameter merge, runtime params, relative catalog paths made absolute against the project root)
and ``create_pipeline()`` runs with a ``SequentialRunner``. Going around the pipeline registry
keeps this test independent of the other stages' pipelines (the CLI run is checked by CI's
README command).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.context.context import _convert_paths_to_absolute_posix
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from project_conf import scope_of  # noqa: F401  (re-exported for the tests)

from ica_captioning import settings
from ica_captioning.data.tables import DataQualityError
from ica_captioning.hooks import apply_dataset_scope
from ica_captioning.pipelines.ingestion.pipeline import create_pipeline

PROJECT = Path(__file__).resolve().parents[3]
SMALL = {"ingestion": {"synthetic": {"num_images": 30, "image_size": 64}}}  # as --params nests


def _param_entries(name: str, value: Any, out: dict[str, Any]) -> None:
    out[f"params:{name}"] = value
    if isinstance(value, dict):
        for key, sub in value.items():
            _param_entries(f"{name}.{key}", sub, out)


def load_project_config(
    project_path: Path, runtime_params: dict[str, Any] | None = None, env: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(catalog config with absolute paths, parameters) of the project at ``project_path``."""
    loader = OmegaConfigLoader(
        conf_source=str(project_path / "conf"),
        env=env,
        runtime_params=runtime_params or {},
        **settings.CONFIG_LOADER_ARGS,
    )
    apply_dataset_scope(loader)  # as the project's hook does in a Kedro session
    catalog_conf = _convert_paths_to_absolute_posix(project_path, loader["catalog"])
    return catalog_conf, loader["parameters"]


def run_ingestion(
    project_path: Path, runtime_params: dict[str, Any] | None = None, env: str | None = None
) -> DataCatalog:
    """Run the ingestion pipeline; returns the catalog (outputs saved where the catalog says)."""
    catalog_conf, params = load_project_config(project_path, runtime_params, env)
    ingestion_names = create_pipeline().datasets()
    catalog = DataCatalog.from_config(
        {k: v for k, v in catalog_conf.items() if k in ingestion_names}
    )
    entries: dict[str, Any] = {"parameters": params}
    for key, value in params.items():
        _param_entries(key, value, entries)
    for key, value in entries.items():
        catalog[key] = value
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A copy of the project's configuration with an empty data folder; cwd = its root."""
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_pipeline_outputs_are_the_contract_names():
    assert {"images", "captions", "quarantine", "vocabulary", "encoded_captions"} <= set(
        create_pipeline().all_outputs()
    )


@pytest.mark.slow
def test_ingestion_runs_on_a_generated_dataset_and_writes_parquet(project):
    run_ingestion(project, SMALL)
    data, scope = project / "data", scope_of(project, SMALL)
    assert scope.startswith("synthetic-")
    assert (data / "01_raw" / "synthetic" / "dataset_synthetic.json").is_file()
    assert len(list((data / "01_raw" / "synthetic" / "images").glob("*.png"))) == 30
    images = pd.read_parquet(data / "03_primary" / scope / "images.parquet")
    captions = pd.read_parquet(data / "03_primary" / scope / "captions.parquet")
    encoded = pd.read_parquet(data / "05_model_input" / scope / "encoded_captions.parquet")
    quarantine = pd.read_parquet(data / "03_primary" / scope / "quarantine.parquet")
    vocabulary = json.loads((data / "04_feature" / scope / "vocabulary.json").read_text())
    assert len(images) == 30 and (images["status"] == "ok").all() and (images["width"] == 64).all()
    assert list(images.columns[:6]) == [
        "image_id",
        "file_path",
        "split",
        "width",
        "height",
        "status",
    ]
    assert len(captions) == 150 and list(captions.columns[:5]) == [
        "caption_id",
        "image_id",
        "split",
        "raw",
        "tokens",
    ]
    assert quarantine.empty and list(quarantine.columns) == [
        "source",
        "file",
        "record",
        "image_id",
        "reason",
    ]
    assert vocabulary["itos"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert vocabulary["min_freq"] == 5 and vocabulary["max_len"] == 24
    schema = pq.read_schema(data / "05_model_input" / scope / "encoded_captions.parquet")
    assert str(schema.field("ids").type) == "list<element: int32>"
    assert (encoded["length"] == encoded["ids"].map(len)).all()
    assert str(
        pq.read_schema(data / "03_primary" / scope / "captions.parquet").field("tokens").type
    ).startswith("list")
    manifest = json.loads((data / "01_raw" / scope / "raw_dataset.json").read_text())
    assert manifest["generated"] is True and manifest["generator"]["num_images"] == 30

    # Second run: the files are up to date, nothing is regenerated.
    run_ingestion(project, SMALL)
    assert (
        json.loads((data / "01_raw" / scope / "raw_dataset.json").read_text())["generated"] is False
    )


@pytest.mark.slow
def test_bad_images_are_quarantined_or_stop_the_run(project):
    run_ingestion(project, SMALL)
    scope = scope_of(project, SMALL)
    images_dir = project / "data" / "01_raw" / "synthetic" / "images"
    (images_dir / "000003.png").write_bytes(b"")  # one bad image of 30 (3.3 %)
    # Deleting a file makes the set out of date: it would be regenerated. Instead break one in
    # place and keep the manifest happy; validation must catch it.
    run_ingestion(project, SMALL)
    quarantine = pd.read_parquet(project / "data" / "03_primary" / scope / "quarantine.parquet")
    assert quarantine[["source", "image_id", "reason"]].values.tolist() == [
        ["image", 3, "empty file (0 bytes)"]
    ]
    images = pd.read_parquet(project / "data" / "03_primary" / scope / "images.parquet")
    captions = pd.read_parquet(project / "data" / "03_primary" / scope / "captions.parquet")
    assert 3 not in set(images["image_id"]) and 3 not in set(captions["image_id"])
    assert len(captions) == 145
    (images_dir / "000004.png").write_bytes(b"garbage")  # 2 of 30 = 6.7 % > 5 %
    with pytest.raises(DataQualityError, match="2 of 30 images"):
        run_ingestion(project, SMALL)


def test_gpu_environment_selects_flickr8k_and_keeps_the_other_keys():
    _, params = load_project_config(PROJECT, env="gpu")
    assert params["dataset"]["name"] == "flickr8k"
    assert params["dataset"]["annotations"].endswith("dataset_flickr8k.json")
    assert params["ingestion"]["validation"]["num_workers"] == 16
    assert params["ingestion"]["validation"]["check_size"] is True  # soft merge kept it
    assert params["ingestion"]["synthetic"]["num_images"] == 2000


def test_pipeline_package_exposes_create_pipeline_for_find_pipelines():
    import ica_captioning.pipelines.ingestion as package

    assert package.create_pipeline().nodes  # find_pipelines looks in the package __init__
