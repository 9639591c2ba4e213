"""A training job: the caption sets, the feature source and the paths of one run, prepared once.

:func:`ica_captioning.training.launch.train_captioner` prepares one with :func:`prepare_job`
and runs it in this process or in several DDP processes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ica_captioning.model.captioner import build_captioner
from ica_captioning.model.features import build_feature_cache
from ica_captioning.params import TrainParams
from ica_captioning.training.batches import (
    CaptionSet,
    ImageSource,
    build_caption_set,
    check_grid_size,
    image_table,
)
from ica_captioning.training.checkpoint import checkpoint_path
from ica_captioning.training.devices import resolve_device

#: Settings that change what is trained; a checkpoint is only resumed under the same values.
RESUME_KEYS = (
    "seed",
    "lambda_aux",
    "alpha_c",
    "ica_mapping",
    "encoder",
    "decoder",
    "batch_size",
    "bucket_batches",
    "lr",
    "encoder_lr",
    "weight_decay",
    "optimizer",
    "lr_schedule",
    "grad_clip",
    "max_train_images",
)


class NoTrainingLabelsError(ValueError):
    """``train.lambda_aux > 0`` but no (caption, token) pair of the training split is labelled."""


def check_ica_labels(
    params: TrainParams,
    train_set: CaptionSet,
    pseudo_labels: pd.DataFrame | None = None,
    before_subset: int | None = None,
) -> None:
    """Zero is an error, not a result: the ICA variant needs labelled training tokens.

    With ``lambda_aux > 0`` and no labelled (caption, token) pair in the training split the ICA
    term is 0 in every batch and the run would train the baseline again under the ICA name.

    Args:
        params: the variant's train settings.
        train_set: the training captions as trained (after ``max_train_images``).
        pseudo_labels: the ``pseudo_labels`` table, for the message (rows per split).
        before_subset: labelled pairs before ``max_train_images`` cut the set, if it did.

    Raises:
        NoTrainingLabelsError: ``lambda_aux > 0`` and ``train_set`` holds no pseudo-label.
    """
    if params.lambda_aux == 0.0 or train_set.num_labels > 0:
        return
    if pseudo_labels is None or len(pseudo_labels) == 0:
        source = "the pseudo_labels table is empty"
    elif "split" in pseudo_labels.columns:
        per_split = pseudo_labels["split"].value_counts().sort_index().to_dict()
        source = f"pseudo_labels has {len(pseudo_labels)} rows, by split {per_split}"
    else:
        source = f"pseudo_labels has {len(pseudo_labels)} rows, none for a training caption"
    if before_subset:
        source += (
            f"; the first train.max_train_images={params.max_train_images} training images "
            f"keep none of the split's {before_subset} labels"
        )
    raise NoTrainingLabelsError(
        f"train.lambda_aux={params.lambda_aux:g} but none of the {len(train_set)} training "
        f"captions has a pseudo-label (0 labelled (caption, token) pairs; {source}): the ICA "
        "term would be 0 and this would train the baseline again. Check the matching "
        "pipeline's matching_stats, or set train.lambda_aux=0."
    )


def check_transformer_length(
    params: TrainParams, train_set: CaptionSet, val_set: CaptionSet | None
) -> None:
    """The Transformer's positions (``transformer.max_len``) must cover every input sequence.

    Teacher forcing feeds ``length − 1`` tokens of each caption and greedy validation
    ``max_decode_len`` tokens; a longer sequence would stop the run mid-epoch.

    Raises:
        ValueError: naming the keys, before any training work.
    """
    if params.architecture != "transformer":
        return
    longest = max(
        [int(s.lengths.max()) - 1 for s in (train_set, val_set) if s is not None and len(s)],
        default=0,
    )
    need = max(longest, params.max_decode_len)
    if need > params.transformer.max_len:
        raise ValueError(
            f"train.transformer.max_len={params.transformer.max_len} is shorter than the "
            f"longest input: {longest} tokens of the longest caption (ingestion.max_caption_len "
            f"+ 1) and train.max_decode_len={params.max_decode_len}; raise "
            "train.transformer.max_len"
        )


@dataclass
class TrainJob:
    """Everything a (possibly spawned) training worker needs — picklable."""

    params: TrainParams
    vocabulary: dict[str, Any]
    train_set: CaptionSet
    val_set: CaptionSet | None
    source: Any  # rows [U] -> images [U, 3, S, S] or cached features [U, L, D]
    cached: bool
    checkpoint: Path
    result_path: str | None = None
    val_references: dict[int, list[str]] = field(default_factory=dict)


def run_key(params: TrainParams, train_set: CaptionSet) -> str:
    """Checkpoint key: the training-relevant settings plus a fingerprint of the training data."""
    data = hashlib.sha256()
    data.update(train_set.caption_ids.tobytes())
    data.update(train_set.ids.tobytes())
    data.update(train_set.label_step.tobytes())
    data.update(train_set.label_grid.tobytes())
    settings = params.to_dict()
    cfg = {k: settings[k] for k in RESUME_KEYS}
    if params.architecture != "sat":
        # Show-Attend-Tell keys stay as they were before the Transformer existed.
        cfg.update(architecture=params.architecture, transformer=settings["transformer"])
    key = {"cfg": cfg, "data": data.hexdigest()}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prepare_job(
    params: TrainParams,
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame | None,
    vocabulary: Mapping[str, Any],
    images_dir: str | os.PathLike,
) -> TrainJob:
    """Build caption sets, the feature source (cache when the encoder is frozen) and paths.

    Args:
        params: the variant's train settings.
        images: ``images`` table.
        encoded_captions: ``encoded_captions`` table.
        pseudo_labels: ``pseudo_labels`` table (None or empty: no ICA targets).
        vocabulary: ``{"itos": [...], ...}``.
        images_dir: ``dataset.images_dir``.

    Returns:
        The job description.

    Raises:
        NoTrainingLabelsError: ``lambda_aux > 0`` and the training split has no pseudo-label.
    """
    grid = params.encoder.grid_size
    if pseudo_labels is not None:
        check_grid_size(pseudo_labels, grid)
    table = image_table(images, ["train", "val"])
    rows = dict(zip(table["image_id"].astype(int), range(len(table))))
    train_set = build_caption_set(encoded_captions, pseudo_labels, "train", rows, grid)
    labelled = train_set.num_labels
    train_set = train_set.subset_images(params.max_train_images)
    # Before any training work (the feature cache, the model): no labels, no ICA variant.
    check_ica_labels(
        params, train_set, pseudo_labels, labelled if labelled != train_set.num_labels else None
    )
    val_set = None
    if (encoded_captions["split"] == "val").any():
        val_set = build_caption_set(encoded_captions, pseudo_labels, "val", rows, grid)
        val_set = val_set.subset_images(params.val_max_images)
    check_transformer_length(params, train_set, val_set)
    used = [train_set.image_rows, val_set.image_rows if val_set else []]
    needed = np.unique(np.concatenate(used).astype(np.int64))
    # Remap to the images actually used, so the cache holds nothing else.
    remap = np.full(len(table), -1, dtype=np.int64)
    remap[needed] = np.arange(len(needed))
    train_set.image_rows = remap[train_set.image_rows]
    if val_set is not None:
        val_set.image_rows = remap[val_set.image_rows]
    ids = table["image_id"].to_numpy(np.int64)[needed]
    paths = table["file_path"].astype(str).to_numpy()[needed].tolist()
    cache = params.feature_cache
    if params.encoder.fine_tune_blocks == 0 and cache.enabled:
        model = build_captioner(params, len(vocabulary["itos"]))
        source = build_feature_cache(
            model.encoder,
            params.encoder,
            ids,
            paths,
            images_dir,
            cache.dir,
            dtype=cache.dtype,
            batch_size=cache.batch_size,
            device=resolve_device(params.device, 0),
        )
        cached = True
    else:
        source, cached = ImageSource(paths, images_dir, params.encoder.image_size), False
    itos = vocabulary["itos"]
    refs: dict[int, list[str]] = {}
    if val_set is not None:
        for img, row, n in zip(val_set.cap_image, val_set.ids, val_set.lengths):
            refs.setdefault(int(img), []).append(" ".join(itos[t] for t in row[1 : n - 1]))
    return TrainJob(
        params=params,
        vocabulary=dict(vocabulary),
        train_set=train_set,
        val_set=val_set,
        source=source,
        cached=cached,
        checkpoint=checkpoint_path(params, run_key(params, train_set)),
        val_references=refs,
    )
