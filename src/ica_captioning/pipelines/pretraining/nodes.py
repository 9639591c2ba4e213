"""Thin Kedro node around :mod:`ica_captioning.pretraining` (the logic lives there)."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ica_captioning.params import DatasetParams, TrainParams
from ica_captioning.params.pretraining import PretrainingParams
from ica_captioning.pretraining import PRETRAINED, pretrain_encoder

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "cell_loss",
    "instance_loss",
    "colour_loss",
    "train_instance_accuracy",
    "lr",
    "seconds",
    "images_per_s",
]


def pretrain_encoder_node(
    images: pd.DataFrame,
    detections: pd.DataFrame,
    pretraining_params: dict[str, Any],
    train_params: dict[str, Any],
    dataset_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Pretrain the encoder trunk when ``train.encoder.weights`` asks for it.

    Args:
        images: ``images`` table (only the ``train`` split is read).
        detections: ``detections`` table (the supervision).
        pretraining_params: ``params:pretraining``.
        train_params: ``params:train`` (``train.encoder`` is the architecture).
        dataset_params: ``params:dataset`` (for ``images_dir``).

    Returns:
        ``(pretrained_encoder bundle, pretraining_history)``. With other encoder weights
        (``conf/gpu``: ImageNet) nothing is trained: the bundle says why (``skipped``) and has
        ``state_dict: None``; the history is empty.
    """
    train = TrainParams.parse(train_params, "train")
    params = PretrainingParams.parse(pretraining_params, "pretraining")
    if train.encoder.weights != PRETRAINED:
        reason = f"train.encoder.weights is {train.encoder.weights!r}, not {PRETRAINED!r}"
        logger.info("Encoder pretraining skipped: %s", reason)
        return {"state_dict": None, "skipped": reason}, pd.DataFrame(columns=HISTORY_COLUMNS)
    dataset = DatasetParams.parse(dataset_params, "dataset")
    bundle = pretrain_encoder(params, train.encoder, images, detections, dataset.images_dir)
    return bundle, pd.DataFrame(bundle["history"], columns=HISTORY_COLUMNS)
