"""Schema of ``params:evaluation`` (conf/base/parameters_evaluation.yml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ica_captioning.params.base import Params
from ica_captioning.params.types import Device, Fraction, NonNegativeInt, PositiveInt


class MetricsParams(Params):
    """Optional caption metrics (each reported unavailable, with the reason, if it cannot run)."""

    meteor: bool
    spice: bool


class GroundingParams(Params):
    """Grounding metrics of the attention maps."""

    mass: Fraction
    ground_truth: bool


class ChairParams(Params):
    """CHAIR's ground truth."""

    ground_truth_from_references: bool


class FiguresParams(Params):
    """Per-word attention figures."""

    num_images: NonNegativeInt
    max_words: PositiveInt
    seed: int
    overlay_alpha: Fraction


class EvaluationParams(Params):
    """Decoding the evaluated split and scoring it."""

    split: Literal["train", "val", "test"]
    max_images: PositiveInt | None
    device: Device
    batch_size: PositiveInt
    beam_size: PositiveInt
    max_len: PositiveInt
    length_penalty: float = Field(ge=0.0)
    allow_unk: bool
    progress: bool
    cpu_attention: Literal["tiled", "compiled"]
    run_id: str | None
    metrics: MetricsParams
    grounding: GroundingParams
    chair: ChairParams
    figures: FiguresParams

    def decode_settings(self) -> dict[str, object]:
        """The keyword arguments of :func:`ica_captioning.decoding.runner.decode_split`."""
        return {
            "beam_size": self.beam_size,
            "max_len": self.max_len,
            "length_penalty": self.length_penalty,
            "allow_unk": self.allow_unk,
            "batch_size": self.batch_size,
            "progress": self.progress,
            "cpu_attention": self.cpu_attention,
        }

    @field_validator("run_id", mode="before")
    @classmethod
    def _run_id_as_text(cls, value: object) -> object:
        # `--params evaluation.run_id=42` arrives as a number; a run id is a label.
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )
