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
