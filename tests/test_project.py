"""Project-level checks: configuration environments, pipeline registry, telemetry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project, pipelines

from ica_captioning import settings

PROJECT = Path(__file__).resolve().parents[1]


def _params(env: str | None) -> dict:
    loader = OmegaConfigLoader(
        conf_source=str(PROJECT / "conf"),
        env=env,
        **{k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"},
    )
    return loader["parameters"]


def test_gpu_environment_overrides_single_keys_softly():
    base = _params("base")
    gpu = _params("gpu")
    assert base["train"]["device"] == "cpu"
    assert gpu["train"]["device"] == "cuda"
    # Soft merge: keys that conf/gpu does not name survive from conf/base.
    for key in base["train"]:
        assert key in gpu["train"], f"conf/gpu erased train.{key}"
    for key in base["dataset"]:
        assert key in gpu["dataset"]
    assert gpu["detection"]["backend"] == "detectron2"
    assert gpu["train"]["lambda_aux"] == base["train"]["lambda_aux"] == 0.1


def test_grid_sizes_agree_between_matching_and_encoder():
    for env in ("base", "gpu"):
        params = _params(env)
        assert params["matching"]["grid_size"] == params["train"]["encoder"]["grid_size"]


def test_pipelines_registered_under_design_names():
    configure_project("ica_captioning")
    names = set(pipelines.keys())
    expected = {"ingestion", "detection", "matching", "train", "evaluation"}
    assert expected <= names, f"missing pipelines: {expected - names}"
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    for name in expected:
        assert {n.name for n in pipelines[name].nodes} <= default_nodes
    # Opt-in: the Transformer decoder trains only with `kedro run --pipeline transformer`.
    assert "transformer_ica.train_model" in {n.name for n in pipelines["transformer"].nodes}
    assert not any(name.startswith("transformer_") for name in default_nodes)


def test_telemetry_consent_is_off_and_committed():
    telemetry = yaml.safe_load((PROJECT / ".telemetry").read_text())
    assert telemetry == {"consent": False}
    assert ".telemetry" not in (PROJECT / ".gitignore").read_text().split()


@pytest.mark.parametrize("path", ["README.md", ".ci/run", "conf/local/README.md"])
def test_top_level_files_exist(path):
    assert (PROJECT / path).is_file()
