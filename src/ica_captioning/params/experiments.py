"""Schema of ``params:experiments`` (conf/base/parameters_experiments.yml).

The control-experiment grid: named variants, each a pseudo-label kind
(:data:`ica_captioning.experiments.masks.MASK_KINDS`) and single-key ``train`` overrides, all
trained with the same seeds and evaluated with the ``evaluation`` settings (docs/experiments.md).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from ica_captioning.params.base import Params
from ica_captioning.params.types import PositiveInt
from ica_captioning.variants import BASELINE

#: Pseudo-label kinds of a variant (``ica_captioning.experiments.masks.MASK_KINDS``, same order;
#: a test checks that the two agree).
MaskKind = Literal[
    "true", "shuffled", "random", "boxes", "degraded_75", "degraded_50", "degraded_25"
]

#: The variant every other one is compared with (``delta_vs_baseline``, the figure's zero).
BASELINE_VARIANT = BASELINE

#: Caption metrics of the evaluation (``ica_captioning.metrics.captions``, CHAIR).
CAPTION_METRIC_NAMES = (
    "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE",
    "CHAIR-i", "CHAIR-s",
)  # fmt: skip
#: Grounding metrics, as ``<metric> [<captions>/<masks>]`` (``reports.tables.grounding_column``).
_GROUNDING_METRIC = re.compile(
    r"attention_(correctness|correctness_chance|iou_topk|iou_mass50) "
    r"\[(generated|reference)/(pseudo_labels|ground_truth)\]"
)
_VARIANT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def safe_name(variant: str) -> str:
    """A variant name as a Kedro namespace and file name part (``ica_lambda_0.01`` → ``…0_01``).

    A dot would nest Kedro namespaces, so every character but letters, digits and ``_`` becomes
    ``_``.
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", str(variant))


class VariantParams(Params):
    """One variant of the grid: its training pseudo-labels and its train settings."""

    masks: MaskKind
    train_overrides: dict[str, Any]

    @field_validator("masks", mode="before")
    @classmethod
    def _yaml_true(cls, value: object) -> object:
        # YAML reads an unquoted `masks: true` as the boolean; the user means the true masks.
        return "true" if value is True else value

    @field_validator("train_overrides", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        # `train_overrides:` with nothing after it is YAML null: no override.
        return {} if value is None else value


class StatsParams(Params):
    """Statistics over seeds (``ica_captioning.experiments.stats.summarise``)."""

    n_resamples: PositiveInt
    seed: int


class FigureParams(Params):
    """The attention-gain vs mask-quality figure."""

    metric: str

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value in CAPTION_METRIC_NAMES or _GROUNDING_METRIC.fullmatch(value):
            return value
        raise ValueError(
            "must be a caption metric (" + ", ".join(CAPTION_METRIC_NAMES) + ") or a grounding "
            "metric '<attention_correctness|attention_iou_topk|attention_iou_mass50> "
            "[<generated|reference>/<pseudo_labels|ground_truth>]'"
        )


class TrackingParams(Params):
    """Optional MLflow tracking of every run (the ``tracking`` extra)."""

    enabled: bool
    uri: str = Field(min_length=1)
    artifact_location: str = Field(min_length=1)
    experiment_name: str = Field(min_length=1)
    log_models: bool


class ExperimentsParams(Params):
    """The grid: variants × seeds, the reduced budget, statistics, figure and tracking."""

    seeds: list[int] = Field(min_length=1)
    eval_split: Literal["train", "val", "test"]
    head_selection_split: Literal["train", "val", "test"] | None = "val"
    variants: dict[str, VariantParams]
    train_overrides: dict[str, Any]
    evaluation_overrides: dict[str, Any]
    num_threads: PositiveInt | None
    progress: bool
    stats: StatsParams
    figure: FigureParams
    tracking: TrackingParams

    @field_validator("train_overrides", "evaluation_overrides", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return {} if value is None else value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct, got {value}")
        return value

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, value: dict[str, VariantParams]) -> dict[str, VariantParams]:
        bad = [name for name in value if not _VARIANT_NAME.fullmatch(str(name))]
        if bad:
            raise ValueError(
                f"variant names may hold letters, digits, '_', '.' and '-' only: {bad}"
            )
        if BASELINE_VARIANT not in value:
            raise ValueError(
                f"the grid needs the {BASELINE_VARIANT!r} variant (every other variant is "
                "compared with it)"
            )
        if len(value) < 2:
            raise ValueError("the grid needs the baseline and at least one other variant")
        seen: dict[str, str] = {}
        for name in value:
            other = seen.setdefault(safe_name(name), name)
            if other != name:
                raise ValueError(
                    f"variant names {other!r} and {name!r} differ only in '.'/'-' vs '_'; "
                    "they would share a Kedro namespace"
                )
        return value

    @field_validator("evaluation_overrides")
    @classmethod
    def _no_split_override(cls, value: dict[str, Any]) -> dict[str, Any]:
        if "split" in value:
            raise ValueError("set the evaluated split with experiments.eval_split, not here")
        return value

    @property
    def num_runs(self) -> int:
        """Trainings in the grid (variants × seeds)."""
        return len(self.variants) * len(self.seeds)
