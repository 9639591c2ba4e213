"""The ``transformer`` pipeline on the evaluation tests' small embedded dataset.

Its two Transformer namespaces train (one epoch, a tiny model) with the train pipeline's node,
then the evaluation nodes put their rows into the shared reports, next to the Show-Attend-Tell
rows when those models exist (``<variant>.model_if_trained``) and alone when they do not.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset, Version
from kedro.runner import SequentialRunner
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import ParquetDataset
from kedro_datasets.pickle import PickleDataset
from project_conf import conf_params, section

from ica_captioning.datasets import OptionalDataset
from ica_captioning.params import deep_merge
from ica_captioning.pipelines.train.pipeline import create_training_pipeline
from ica_captioning.pipelines.transformer.pipeline import (
    create_pipeline,
    create_transformer_evaluation_pipeline,
)
from ica_captioning.variants import TRANSFORMER_VARIANTS, VARIANTS

ALL = (*VARIANTS, *TRANSFORMER_VARIANTS)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: a second thread only adds synchronisation (most on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_params(tmp_path) -> dict:
    return deep_merge(
        section("train"),
        {
            "encoder": {"weights": "none", "layer": "layer2", "grid_size": 4, "image_size": 64},
            "transformer": {"d_model": 16, "num_heads": 2, "d_ff": 32, "warmup_steps": 2},
            "epochs": 1,
            "batch_size": 8,
            "val_max_images": None,
            "max_decode_len": 6,
            "progress_bar": False,
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "feature_cache": {"dir": str(tmp_path / "cache")},
        },
    )


def _sat_datasets(root, inputs: dict | None) -> dict:
    """``<variant>.model_if_trained`` / ``.training_history_if_trained`` of the SAT models, as the
    project catalog declares them: versioned files under ``root``, saved when ``inputs``."""
    datasets = {}
    for variant in VARIANTS:
        model = {"type": "pickle.PickleDataset", "filepath": str(root / f"{variant}.model.pkl"),
                 "versioned": True}  # fmt: skip
        history = {"type": "pandas.ParquetDataset", "versioned": True,
                   "filepath": str(root / f"{variant}_training_history.parquet")}  # fmt: skip
        if inputs is not None:
            new = Version(None, None)  # a new version, as a versioned catalog entry saves
            PickleDataset(filepath=model["filepath"], version=new).save(inputs["bundles"][variant])
            ParquetDataset(filepath=history["filepath"], version=new).save(inputs["history"])
        datasets[f"{variant}.model_if_trained"] = OptionalDataset(model)
        datasets[f"{variant}.training_history_if_trained"] = OptionalDataset(history)
    return datasets


def _catalog(inputs: dict, out, sat: dict) -> DataCatalog:
    params = conf_params()
    names = ("images", "captions", "encoded_captions", "detections", "pseudo_labels", "vocabulary")
    data = {name: inputs[name] for name in names}
    data["pretrained_encoder"] = {"state_dict": None, "skipped": "weights is 'none'"}
    data["params:train"] = _train_params(out)
    for variant in TRANSFORMER_VARIANTS:
        data[f"params:{variant}.train_overrides"] = params[variant]["train_overrides"]
    data["params:dataset"] = inputs["dataset"]
    data["params:matching"] = inputs["matching"]
    data["params:evaluation"] = deep_merge(inputs["evaluation"], {"metrics": {"spice": False}})
    datasets = {k: MemoryDataset(v) for k, v in data.items()} | sat
    for name in ("caption_metrics", "grounding_metrics", "comparison"):
        datasets[name] = ParquetDataset(filepath=str(out / f"{name}.parquet"))
    for name in ("attention_figures", "transformer_head_figures"):
        datasets[name] = MatplotlibDataset(filepath=str(out / name))
    for variant in TRANSFORMER_VARIANTS:  # kept on disk: the runner releases memory datasets
        for name in ("model", "training_history"):
            datasets[f"{variant}.{name}"] = PickleDataset(filepath=str(out / f"{variant}.{name}"))
    return DataCatalog(datasets=datasets)


def test_pipeline_structure():
    full = create_pipeline()
    names = {n.name for n in full.nodes}
    assert {f"{v}.train_model" for v in TRANSFORMER_VARIANTS} <= names
    assert {f"{v}.decode" for v in ALL} <= names
    assert not {f"{v}.train_model" for v in VARIANTS} & names  # SAT is read, never trained here
    # Upstream stages are part of it (like `train`); the SAT models are optional inputs.
    assert "images" not in full.inputs() and "pretrained_encoder" not in full.inputs()
    assert {f"{v}.model_if_trained" for v in VARIANTS} <= full.inputs()
    assert not {f"{v}.model" for v in VARIANTS} & full.inputs()


@pytest.mark.slow
def test_transformer_rows_join_the_reports_next_to_sat_rows(eval_inputs, tmp_path):
    out = tmp_path / "with_sat"
    out.mkdir()
    catalog = _catalog(eval_inputs, out, _sat_datasets(out / "models", eval_inputs))
    pipe = create_training_pipeline(TRANSFORMER_VARIANTS, "transformer")
    pipe += create_transformer_evaluation_pipeline()
    SequentialRunner().run(pipe, catalog)

    for variant, lam in zip(TRANSFORMER_VARIANTS, (0.0, 0.1)):
        config = catalog.load(f"{variant}.model")["config"]
        assert config["architecture"] == "transformer" and config["lambda_aux"] == lam
        assert config["alpha_c"] == 0.0
    caps = pd.read_parquet(out / "caption_metrics.parquet")
    assert list(dict.fromkeys(caps["variant"])) == list(ALL)
    assert caps.groupby("variant").size().nunique() == 1  # the same rows for every model
    ground = pd.read_parquet(out / "grounding_metrics.parquet")
    assert set(ground["variant"]) == set(ALL)
    comp = pd.read_parquet(out / "comparison.parquet")
    assert comp["variant"].tolist() == [
        "baseline", "ica", "difference",
        "transformer_baseline", "transformer_ica", "transformer_difference",
    ]  # fmt: skip
    assert comp["model"].tolist()[3:] == [
        "Transformer",
        "Transformer +ICA Loss",
        "Δ (+ICA − Transformer)",
    ]
    by = comp.set_index("variant")
    assert by.loc["transformer_difference", "BLEU-1"] == pytest.approx(
        by.loc["transformer_ica", "BLEU-1"] - by.loc["transformer_baseline", "BLEU-1"]
    )
    # Attention figures: one row per model; per-head figures of the Transformer variants.
    assert len(list((out / "attention_figures").glob("image_*.png"))) == 2
    heads = sorted(p.name for p in (out / "transformer_head_figures").glob("*.png"))
    assert len(heads) == 4 and all(p.endswith(TRANSFORMER_VARIANTS) for p in
                                   (h.removesuffix(".png") for h in heads))  # fmt: skip

    # Without trained SAT models: the Transformer rows alone.
    alone = tmp_path / "alone"
    alone.mkdir()
    catalog2 = _catalog(eval_inputs, alone, _sat_datasets(alone / "models", None))
    for variant in TRANSFORMER_VARIANTS:
        catalog2[f"{variant}.model"] = catalog.load(f"{variant}.model")
        catalog2[f"{variant}.training_history"] = catalog.load(f"{variant}.training_history")
    SequentialRunner().run(create_transformer_evaluation_pipeline().to_outputs("comparison"),
                           catalog2)  # fmt: skip
    comp2 = pd.read_parquet(alone / "comparison.parquet")
    assert comp2["variant"].tolist() == list(TRANSFORMER_VARIANTS) + ["transformer_difference"]
    # The same models on the same images: the same Transformer rows as with SAT.
    pd.testing.assert_frame_equal(
        comp2.drop(columns="run_id").reset_index(drop=True),
        comp.drop(columns="run_id").iloc[3:].reset_index(drop=True),
    )
    assert set(pd.read_parquet(alone / "caption_metrics.parquet")["variant"]) == set(
        TRANSFORMER_VARIANTS
    )
