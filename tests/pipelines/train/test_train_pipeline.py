"""The Kedro `train` pipeline on a tiny dataset, and its configuration files."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import tiny_data
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from project_conf import section

from ica_captioning.hooks import apply_dataset_scope
from ica_captioning.model import load_captioner
from ica_captioning.params import ParameterError, TrainParams, deep_merge
from ica_captioning.pipelines.train.pipeline import create_pipeline, create_training_pipeline

ROOT = Path(__file__).resolve().parents[3]


def _loader(env: str = "local") -> OmegaConfigLoader:
    return OmegaConfigLoader(
        str(ROOT / "conf"),
        base_env="base",
        default_run_env=env,
        merge_strategy={"parameters": "soft"},
    )


def test_parameters_resolve_for_both_variants_and_gpu_env():
    params = _loader()["parameters"]
    base = TrainParams.resolve(params["train"], params["baseline"]["train_overrides"])
    ica = TrainParams.resolve(params["train"], params["ica"]["train_overrides"])
    assert base.lambda_aux == 0.0 and ica.lambda_aux == 0.1
    assert base.replace(lambda_aux=0.1) == ica  # the variants differ in λ only
    gpu = _loader("gpu")["parameters"]["train"]
    cfg = TrainParams.resolve(gpu, {})
    assert cfg.device == "cuda" and cfg.amp is True
    assert cfg.encoder.backbone == "resnet101"
    # Soft merge: keys the gpu env does not set survive.
    assert cfg.lambda_aux == 0.1 and cfg.alpha_c == 1.0
    assert cfg.encoder.grid_size == 14
    with pytest.raises(ParameterError, match="train.lamda_aux: unknown key"):
        TrainParams.resolve(params["train"], {"lamda_aux": 0.0})


def test_catalog_factories_resolve_versioned_outputs():
    # Without the project hook (e.g. kedro-viz without --include-hooks) the catalog still
    # resolves, with a stand-in folder instead of a dataset scope.
    unscoped = DataCatalog.from_config(_loader()["catalog"]).get("images")._describe()
    assert "/no-dataset-scope-without-project-hooks/images.parquet" in str(unscoped["filepath"])
    loader = _loader()
    scope = apply_dataset_scope(loader)
    catalog = DataCatalog.from_config(loader["catalog"])
    for variant in ("baseline", "ica"):
        model_ds = catalog.get(f"{variant}.model")
        hist_ds = catalog.get(f"{variant}.training_history")
        assert type(model_ds).__name__ == "PickleDataset"
        assert type(hist_ds).__name__ == "ParquetDataset"
        assert f"{scope}/{variant}.model.pkl" in str(model_ds._describe()["filepath"])
        assert model_ds._describe()["version"] is not None


def test_pipeline_structure():
    train = create_training_pipeline()
    assert {n.name for n in train.nodes} == {"baseline.train_model", "ica.train_model"}
    assert train.outputs() == {
        "baseline.model",
        "ica.model",
        "baseline.training_history",
        "ica.training_history",
    }
    assert "params:train" in train.inputs() and "params:ica.train_overrides" in train.inputs()
    full = create_pipeline()
    assert {"baseline.train_model", "ica.train_model"} <= {n.name for n in full.nodes}
    # Upstream stages are included when they exist, so a fresh checkout runs end to end.
    if importlib.util.find_spec("ica_captioning.pipelines.ingestion.pipeline"):
        assert "images" not in full.inputs() and "encoded_captions" not in full.inputs()


@pytest.mark.slow
def test_pipeline_trains_both_variants_on_tiny_dataset(tmp_path):
    data = tiny_data.make_tiny_dataset(tmp_path / "data")
    params = _loader()["parameters"]
    train = deep_merge(
        params["train"],
        {
            **{k: v for k, v in tiny_data.TINY_CONFIG.items() if k != "lambda_aux"},
            "epochs": 1,
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "feature_cache": {"dir": str(tmp_path / "cache")},
        },
    )
    catalog = DataCatalog()
    for name in ("images", "encoded_captions", "pseudo_labels", "vocabulary"):
        catalog[name] = data[name]
    # TINY_CONFIG's encoder is randomly initialised: the pretraining stage would have skipped.
    catalog["pretrained_encoder"] = {"state_dict": None, "skipped": "weights is 'none'"}
    catalog["params:train"] = train
    catalog["params:dataset"] = section("dataset", images_dir=data["images_dir"])
    catalog["params:baseline.train_overrides"] = params["baseline"]["train_overrides"]
    catalog["params:ica.train_overrides"] = params["ica"]["train_overrides"]
    SequentialRunner().run(create_training_pipeline(), catalog)
    bundles = {v: catalog.load(f"{v}.model") for v in ("baseline", "ica")}
    hists = {v: catalog.load(f"{v}.training_history") for v in ("baseline", "ica")}
    assert bundles["baseline"]["config"]["lambda_aux"] == 0.0
    assert bundles["ica"]["config"]["lambda_aux"] == 0.1
    assert math.isnan(hists["baseline"]["train_ica"].iloc[0])
    assert hists["ica"]["train_ica"].iloc[0] > 0
    for bundle in bundles.values():
        model = load_captioner(bundle)
        assert model.grid_size == 4
    # Both variants share one feature cache (same frozen encoder and images).
    assert len(list((tmp_path / "cache").glob("features-*.npy"))) == 1
    # Grid mismatch between pseudo-labels and encoder: clear error from the node.
    bad = data["pseudo_labels"].assign(grid_size=14)
    catalog["pseudo_labels"] = bad
    with pytest.raises(ValueError, match="grid_size"):
        SequentialRunner().run(create_training_pipeline().only_nodes("ica.train_model"), catalog)
