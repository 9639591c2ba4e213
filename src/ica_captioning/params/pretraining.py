"""Schema of ``params:pretraining`` (conf/base/parameters_pretraining.yml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ica_captioning.params.base import Params
from ica_captioning.params.types import Device, Fraction, NonNegativeFloat, PositiveInt


class PretrainingParams(Params):
    """In-domain pretraining of the encoder trunk on the training split's detections."""

    device: Device
    seed: int
    epochs: PositiveInt
    batch_size: PositiveInt
    lr: float = Field(gt=0.0)
    weight_decay: NonNegativeFloat
    warmup_fraction: Fraction
    score_threshold: Fraction
    cell_loss_weight: NonNegativeFloat
    instance_loss_weight: NonNegativeFloat
    colour_loss_weight: NonNegativeFloat
    precision: Literal["float32", "bfloat16"]
    cache_dir: str
    progress: bool
