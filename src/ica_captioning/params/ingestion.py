"""Schema of ``params:ingestion`` (conf/base/parameters_ingestion.yml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ica_captioning.params.base import Params
from ica_captioning.params.types import Fraction, NonNegativeFloat, NonNegativeInt, PositiveInt

Split = Literal["train", "val", "test"]


class ValidationParams(Params):
    """Image validation (decoding every image file once)."""

    num_workers: NonNegativeInt
    check_size: bool
    progress: bool


class SplitFractions(Params):
    """Share of the generated images in each split (index order: train first)."""

    train: Fraction
    val: Fraction
    test: Fraction


class SizeClasses(Params):
    """Half-extent ``[min, max]`` of mentioned objects per size class (fraction of the side)."""

    small: tuple[Fraction, Fraction]
    medium: tuple[Fraction, Fraction]
    large: tuple[Fraction, Fraction]


class BackgroundParams(Params):
    """The background: mean grey plus a smooth random texture plus per-pixel noise."""

    texture_strength: NonNegativeFloat
    texture_cells: int = Field(ge=2)
    noise_std: NonNegativeFloat


class DistractorParams(Params):
    """Small unmentioned objects behind the mentioned ones."""

    count_p: list[Fraction]
    size: tuple[Fraction, Fraction]
    same_shape_p: Fraction
    min_visible_fraction: Fraction


class SceneParams(Params):
    """What a generated scene may contain (``SceneSettings``)."""

    object_count_p: list[Fraction]
    repeat_p: Fraction
    sizes: SizeClasses
    min_visible_fraction: Fraction
    background: BackgroundParams
    distractors: DistractorParams


class SyntheticParams(Params):
    """The embedded dataset's generator."""

    num_images: PositiveInt
    image_size: int = Field(ge=32)
    seed: int | None
    split_fractions: SplitFractions
    captions_per_image: PositiveInt
    image_format: Literal["png", "jpg"]
    polygon_fraction: Fraction
    scene: SceneParams
    num_workers: PositiveInt


class IngestionParams(Params):
    """Reading, validating, tokenising and encoding a dataset."""

    restval_split: Split
    on_bad_annotation: Literal["quarantine", "raise"]
    max_bad_fraction: Fraction
    coco_image_subdirs: dict[Split, str]
    validation: ValidationParams
    min_word_freq: PositiveInt
    max_caption_len: PositiveInt
    synthetic: SyntheticParams
