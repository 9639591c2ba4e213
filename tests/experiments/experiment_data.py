"""A tiny dataset for the experiment grid: ``tests/tiny_data.py`` plus what evaluation reads.

``make_tiny_dataset`` gives images (train/val), encoded captions, pseudo-labels and the
vocabulary; the grid also evaluates, so this adds a test split, the ``captions`` table (words
and raw text) and a ``detections`` table (one square per image, its mask as COCO RLE).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from project_conf import conf_params, section
from tiny_data import ITOS, TINY_CONFIG, make_tiny_dataset

from ica_captioning.detection.rle import encode_masks
from ica_captioning.params import deep_merge

GRID = 4
N_TEST = 3


def make_experiment_dataset(root: Path) -> dict:
    """Tables of 8 train, 3 val and 3 test images; see the module docstring."""
    data = make_tiny_dataset(root, n_train=8, n_val=3 + N_TEST, grid=GRID)
    images = data["images"].copy()
    test_ids = set(images["image_id"].tail(N_TEST).tolist())
    images.loc[images["image_id"].isin(test_ids), "split"] = "test"
    encoded = data["encoded_captions"].copy()
    encoded["split"] = encoded["image_id"].map(dict(zip(images["image_id"], images["split"])))
    tokens = [[ITOS[i] for i in ids[1:-1]] for ids in encoded["ids"]]
    captions = pd.DataFrame(
        {
            "caption_id": encoded["caption_id"].astype("int64"),
            "image_id": encoded["image_id"].astype("int64"),
            "split": encoded["split"],
            "raw": [" ".join(t) for t in tokens],
            "tokens": tokens,
        }
    )
    rows = []
    for iid, rel in zip(images["image_id"], images["file_path"]):
        mask = np.asarray(Image.open(Path(data["images_dir"]) / rel)).any(axis=2)
        ys, xs = np.nonzero(mask)
        rows.append(
            {
                "image_id": int(iid),
                "instance_id": 0,
                "class_name": "square",
                "score": 1.0,
                "box": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                "rle_counts": encode_masks(mask)[0],
                "height": mask.shape[0],
                "width": mask.shape[1],
                "status": "ok",
            }
        )
    return {
        **data,
        "images": images,
        "encoded_captions": encoded,
        "captions": captions,
        "detections": pd.DataFrame(rows),
    }


def experiment_sections(
    tmp_path: Path, images_dir: str, variants: dict, seeds: list[int], **experiments
) -> dict:
    """Full parameter sections for the tiny set-up (conf/base with small keys overridden).

    Returns:
        ``{"train", "dataset", "matching", "evaluation", "experiments"}`` as Kedro passes them.
    """
    train = deep_merge(
        section("train"),
        deep_merge(
            TINY_CONFIG,
            {
                # The encoder starts from random weights: no pretraining stage in these tests.
                "encoder": {"weights": "none"},
                "checkpoint_dir": str(tmp_path / "ckpt"),
                "feature_cache": {"dir": str(tmp_path / "cache"), "dtype": "float32"},
            },
        ),
    )
    base = conf_params()["experiments"]
    exp = deep_merge(
        {k: v for k, v in base.items() if k != "variants"},
        {
            "seeds": seeds,
            "train_overrides": {"epochs": 1},
            "stats": {"n_resamples": 200},
            "progress": False,
            **experiments,
        },
    )
    exp["variants"] = variants
    return {
        "train": train,
        "dataset": section("dataset")
        | {"name": "synthetic", "instances": None, "images_dir": images_dir},
        "matching": section("matching", grid_size=GRID),
        "evaluation": section(
            "evaluation",
            beam_size=2,
            max_len=6,
            batch_size=8,
            metrics={"meteor": False, "spice": False},
        ),
        "experiments": exp,
    }


def grid_inputs(data: dict, sections: dict, head_selection_split: str | None = None):
    """``(ExperimentsParams, EvaluationSet, TrainingData)`` of the tiny set-up (as the nodes)."""
    from ica_captioning.experiments import grid
    from ica_captioning.params.experiments import ExperimentsParams

    exp = ExperimentsParams.parse(
        {**sections["experiments"], "head_selection_split": head_selection_split}, "experiments"
    )
    evaluation, training = grid.grid_inputs(data, sections, exp)
    return exp, evaluation, training
