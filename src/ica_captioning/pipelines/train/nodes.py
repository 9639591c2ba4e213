"""Thin Kedro nodes around :mod:`ica_captioning.training` (the logic lives there)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from ica_captioning.params import DatasetParams, TrainParams
from ica_captioning.pretraining import with_pretrained_weights
from ica_captioning.training import train_captioner

logger = logging.getLogger(__name__)


def train_model(
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    vocabulary: dict[str, Any],
    pretrained_encoder: dict[str, Any],
    train_params: dict[str, Any],
    train_overrides: dict[str, Any] | None,
    dataset_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one variant of the captioner.

    Args:
        images: ``images`` table (``file_path`` relative to ``dataset.images_dir``).
        encoded_captions: ``encoded_captions`` table.
        pseudo_labels: ``pseudo_labels`` table (grid size must equal ``train.encoder.grid_size``).
        vocabulary: ``vocabulary`` JSON.
        pretrained_encoder: the ``pretraining`` stage's bundle; used when
            ``train.encoder.weights`` is ``pretrained``.
        train_params: shared ``params:train``.
        train_overrides: the namespace's ``train_overrides`` (e.g. ``{lambda_aux: 0.0}``).
        dataset_params: ``params:dataset`` (for ``images_dir``).

    Returns:
        ``(model bundle {"state_dict", "config", "vocabulary"}, per-epoch history table)``.
    """
    params = with_pretrained_weights(
        TrainParams.resolve(train_params, train_overrides), pretrained_encoder
    )
    dataset = DatasetParams.parse(dataset_params, "dataset")
    start = time.perf_counter()
    bundle, history = train_captioner(
        params, images, encoded_captions, pseudo_labels, vocabulary, dataset.images_dir
    )
    logger.info(
        "Trained λ_aux=%g for %d epochs in %.1f s",
        params.lambda_aux,
        len(history),
        time.perf_counter() - start,
    )
    return bundle, history
