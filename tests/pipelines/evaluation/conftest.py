"""Small but real inputs of the evaluation pipeline, built without running the other stages.

The embedded-dataset generator writes a few images with COCO instances and Karpathy captions;
the tables follow docs/contracts.md; the two model bundles are randomly initialised captioners
with a 4×4 attention grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import ParquetDataset
from project_conf import model_params, section

from ica_captioning.variants import VARIANTS

GRID = 4
MODEL_CONFIG = model_params(
    encoder={"grid_size": GRID, "image_size": 64, "layer": "layer2"},
    decoder={"embed_dim": 16, "hidden_dim": 32, "attention_dim": 16, "dropout": 0.0},
)


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory) -> dict:

    from ica_captioning.data.readers import read_karpathy
    from ica_captioning.data.synthetic import dataset_files, generate_dataset
    from ica_captioning.data.text import build_vocabulary, encode_captions
    from ica_captioning.detection import detections_frame, image_records
    from ica_captioning.detection.annotations import AnnotationsBackend
    from ica_captioning.matching import default_lexicon
    from ica_captioning.matching.pseudo_labels import build_pseudo_labels
    from ica_captioning.model import build_captioner, make_bundle

    root = tmp_path_factory.mktemp("embedded")
    generate_dataset(
        root, **section("ingestion")["synthetic"] | {
            "num_images": 16, "image_size": 64, "seed": 3,
            "split_fractions": {"train": 0.5, "val": 0.125, "test": 0.375},
        },
    )  # fmt: skip
    files = dataset_files(root)
    ingestion = section("ingestion")
    images, captions, _, _ = read_karpathy(
        files["karpathy"],
        restval_split=ingestion["restval_split"],
        on_bad=ingestion["on_bad_annotation"],
    )
    images["width"] = 64
    images["height"] = 64
    images["status"] = "ok"
    vocab = build_vocabulary(captions["tokens"], min_freq=1, max_len=24)
    encoded = encode_captions(captions, vocab)
    instances = [str(p) for p in files["instances"].values()]
    backend = AnnotationsBackend(instances, images, include_crowd=True)
    results, _ = backend.detect(image_records(images, root))
    detections = detections_frame(results)
    pseudo_labels, _ = build_pseudo_labels(
        captions, detections, default_lexicon(),
        score_threshold=0.5, grid_size=GRID, cell_threshold=0.5, progress=False,
    )  # fmt: skip
    bundles = {}
    for seed, variant in enumerate(VARIANTS):
        torch.manual_seed(seed)
        model = build_captioner(MODEL_CONFIG, vocab_size=len(vocab.itos))
        bundles[variant] = make_bundle(model, MODEL_CONFIG, vocab.to_json())
    # ``name`` is ``section``'s own argument, so the dataset keys are set on its result.
    dataset = section("dataset") | {
        "name": "synthetic",
        "images_dir": str(root),
        "instances": instances,
    }
    history = pd.DataFrame({"epoch": [1, 2], "train_ce": [3.0, 2.5], "val_bleu4": [0.05, 0.08]})
    return {
        "root": Path(root),
        "images": images,
        "captions": captions,
        "encoded_captions": encoded,
        "vocabulary": vocab.to_json(),
        "detections": detections,
        "pseudo_labels": pseudo_labels,
        "bundles": bundles,
        "history": history,
        "instances": instances,
        # Full parameter sections: conf/base with the keys of this small set-up overridden.
        "dataset": dataset,
        "matching": section("matching", score_threshold=0.5, grid_size=GRID, cell_threshold=0.5),
        "evaluation": section(
            "evaluation",
            beam_size=2,
            max_len=6,
            batch_size=4,
            metrics={"meteor": False, "spice": True},
            figures={"num_images": 2, "max_words": 4},
            run_id="test-run",
        ),
        "rng": np.random.default_rng(0),
    }


def _catalog(inputs: dict, out_dir: Path) -> DataCatalog:
    """The evaluation pipeline's inputs in memory; every output saved under ``out_dir``."""
    data = {
        "images": inputs["images"],
        "captions": inputs["captions"],
        "encoded_captions": inputs["encoded_captions"],
        "detections": inputs["detections"],
        "pseudo_labels": inputs["pseudo_labels"],
        "baseline.model": inputs["bundles"]["baseline"],
        "ica.model": inputs["bundles"]["ica"],
        "baseline.training_history": inputs["history"],
        "ica.training_history": inputs["history"].assign(train_ce=[2.9, 2.2]),
        "params:dataset": inputs["dataset"],
        "params:matching": inputs["matching"],
        "params:evaluation": inputs["evaluation"],
    }
    datasets = {k: MemoryDataset(v) for k, v in data.items()}
    for name in ("caption_metrics", "grounding_metrics", "comparison", "grounding_words"):
        datasets[name] = ParquetDataset(filepath=str(out_dir / f"{name}.parquet"))
    for variant in VARIANTS:
        # The teacher-forced reference attention is kept too (the project catalog holds it in
        # memory only), so that the grounding report can be recomputed from saved maps.
        for name in ("generated", "reference_attention"):
            key = "generated_captions" if name == "generated" else name
            datasets[f"{variant}.{key}"] = ParquetDataset(
                filepath=str(out_dir / f"{variant}_{name}.parquet")
            )
    datasets["attention_figures"] = MatplotlibDataset(filepath=str(out_dir / "attention"))
    datasets["training_curves"] = MatplotlibDataset(filepath=str(out_dir / "curves.png"))
    return DataCatalog(datasets=datasets)


@pytest.fixture(scope="session")
def evaluation_run(eval_inputs, tmp_path_factory) -> Path:
    """The evaluation pipeline run once on :func:`eval_inputs`; the folder of its outputs.

    Files: ``<report>.parquet``, ``<variant>_generated.parquet``,
    ``<variant>_reference_attention.parquet``, ``attention/``, ``curves.png``.
    """
    from ica_captioning.pipelines.evaluation import create_pipeline

    out = tmp_path_factory.mktemp("reports")
    SequentialRunner().run(create_pipeline(), _catalog(eval_inputs, out))
    return out
