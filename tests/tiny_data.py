"""A tiny captioning dataset in the stage-contract formats, built in the tests (no generator).

Each image is a black square canvas with one coloured square; its captions name the colour and
the shape, and the shape word carries a pseudo-label: the grid cells the square covers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from project_conf import section

from ica_captioning.params import TrainParams, deep_merge

ITOS = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "green", "blue", "square", "block", "big"]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}

TINY_CONFIG = {
    "device": "cpu",
    "seed": 0,
    "lambda_aux": 0.1,
    "encoder": {
        "backbone": "resnet18",
        "weights": "none",
        "layer": "layer1",
        "grid_size": 4,
        "image_size": 32,
        "fine_tune_blocks": 0,
    },
    "decoder": {"embed_dim": 8, "hidden_dim": 16, "attention_dim": 8, "dropout": 0.0},
    "epochs": 2,
    "batch_size": 4,
    "lr": 0.01,
    "lr_schedule": {"type": "step", "step_size": 1, "gamma": 0.5},
    "early_stopping": {"metric": "bleu4", "patience": None},
    "val_max_images": None,
    "max_decode_len": 6,
    "progress_bar": False,
}


def make_tiny_dataset(
    root: Path, n_train: int = 8, n_val: int = 3, size: int = 32, grid: int = 4, seed: int = 0
) -> dict:
    """Write images under ``root`` and return the contract tables.

    Returns:
        ``{"images", "encoded_captions", "pseudo_labels", "vocabulary", "images_dir"}``.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    stoi = {w: i for i, w in enumerate(ITOS)}
    img_rows, cap_rows, pl_rows = [], [], []
    cap_id = 100
    for image_id in range(n_train + n_val):
        split = "train" if image_id < n_train else "val"
        colour = list(COLOURS)[image_id % 3]
        side = size // 2
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        pixels = np.zeros((size, size, 3), dtype=np.uint8)
        pixels[y0 : y0 + side, x0 : x0 + side] = COLOURS[colour]
        rel = f"images/{image_id:04d}.png"
        Image.fromarray(pixels).save(root / rel)
        img_rows.append(
            {
                "image_id": image_id,
                "file_path": rel,
                "split": split,
                "width": size,
                "height": size,
                "status": "ok",
            }
        )
        mask = np.zeros((size, size), dtype=bool)
        mask[y0 : y0 + side, x0 : x0 + side] = True
        cell = size // grid
        frac = mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3))
        grid_mask = frac >= 0.5
        packed = np.packbits(grid_mask.reshape(-1)).tobytes()
        for words in (["a", colour, "square"], ["a", "big", colour, "block"]):
            ids = [1] + [stoi[w] for w in words] + [2]
            cap_rows.append(
                {
                    "caption_id": cap_id,
                    "image_id": image_id,
                    "split": split,
                    "ids": np.asarray(ids, dtype=np.int32),
                    "length": len(ids),
                }
            )
            pl_rows.append(
                {
                    "caption_id": cap_id,
                    "image_id": image_id,
                    "token_position": len(words) - 1,
                    "class_name": "square",
                    "grid_size": grid,
                    "grid": packed,
                }
            )
            cap_id += 1
    return {
        "images": pd.DataFrame(img_rows),
        "encoded_captions": pd.DataFrame(cap_rows),
        "pseudo_labels": pd.DataFrame(pl_rows),
        "vocabulary": {"itos": list(ITOS), "min_freq": 1, "max_len": 8},
        "images_dir": str(root),
    }


def tiny_config(tmp_path: Path, **overrides) -> TrainParams:
    """conf/base's train settings made tiny, checkpoints and cache under ``tmp_path``."""
    base = deep_merge(
        TINY_CONFIG,
        {
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "feature_cache": {"enabled": True, "dir": str(tmp_path / "cache"), "dtype": "float32"},
        },
    )
    return TrainParams.resolve(section("train"), deep_merge(base, overrides))


def train_tiny(cfg: TrainParams, data: dict, **kwargs):
    """``train_captioner`` on a :func:`make_tiny_dataset` dataset."""
    from ica_captioning.training import train_captioner

    return train_captioner(
        cfg,
        data["images"],
        data["encoded_captions"],
        data["pseudo_labels"],
        data["vocabulary"],
        data["images_dir"],
        **kwargs,
    )
