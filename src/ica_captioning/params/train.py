"""Schema of ``params:train`` (conf/base/parameters_train.yml) and of a model's settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from ica_captioning.params.base import Params, deep_merge
from ica_captioning.params.types import Device, Fraction, NonNegativeInt, PositiveInt

#: Attention → Lovász-hinge score mappings (``ica_captioning.losses.ica.MAPPINGS``).
ScoreMapping = Literal["scaled", "log", "identity"]


class EncoderParams(Params):
    """The CNN that turns an image into ``L = G²`` annotation vectors."""

    backbone: str
    weights: str
    layer: Literal["layer1", "layer2", "layer3", "layer4"]
    grid_size: PositiveInt
    image_size: int = Field(ge=16)
    fine_tune_blocks: NonNegativeInt
    init_seed: int
    standardize: bool


class DecoderParams(Params):
    """The Show-Attend-Tell LSTM decoder with additive attention."""

    embed_dim: PositiveInt
    hidden_dim: PositiveInt
    attention_dim: PositiveInt
    dropout: Fraction
    attention_init_scale: float = Field(gt=0.0)


#: Decoder architectures (``train.architecture``): Show-Attend-Tell or the Transformer.
Architecture = Literal["sat", "transformer"]
#: ``train.transformer.ica_layers``: the last layer, every layer, or layer indices.
LayerSelection = Literal["last", "all"] | list[int]
#: ``train.transformer.ica_heads``: every head or head indices (taken in each chosen layer).
HeadSelection = Literal["all"] | list[int]


class TransformerParams(Params):
    """The pre-LN Transformer decoder (``ica_captioning.model.transformer``) and its ICA maps."""

    d_model: PositiveInt
    num_layers: PositiveInt
    num_heads: PositiveInt
    d_ff: PositiveInt
    dropout: Fraction
    encoder_layers: NonNegativeInt
    tie_embeddings: bool
    max_len: PositiveInt
    warmup_steps: NonNegativeInt
    attention_init_scale: float = Field(gt=0.0)
    ica_layers: LayerSelection
    ica_heads: HeadSelection
    head_reduction: Literal["mean", "max", "per_head"]

    @model_validator(mode="after")
    def _check_shapes(self) -> TransformerParams:
        if self.d_model % self.num_heads or self.d_model % 4:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by num_heads={self.num_heads} and by 4"
            )
        for name, chosen, size in (
            ("ica_layers", self.ica_layers, self.num_layers),
            ("ica_heads", self.ica_heads, self.num_heads),
        ):
            if isinstance(chosen, list):
                if not chosen:
                    raise ValueError(f"{name} must name at least one index")
                bad = [i for i in chosen if not -size <= i < size]
                if bad:
                    raise ValueError(f"{name} {bad} outside 0..{size - 1}")
                if len({i % size for i in chosen}) != len(chosen):
                    raise ValueError(f"{name} {chosen} repeats an index")
        return self


class ModelParams(Params):
    """What a captioner is built from (the model part of the train settings).

    ``decoder`` holds the Show-Attend-Tell settings, ``transformer`` the Transformer's;
    ``architecture`` says which one is built. A bundle saved before ``architecture`` existed is a
    Show-Attend-Tell model (:meth:`of`).
    """

    architecture: Architecture
    encoder: EncoderParams
    decoder: DecoderParams
    transformer: TransformerParams | None

    @model_validator(mode="after")
    def _check_transformer(self) -> ModelParams:
        if self.architecture == "transformer" and self.transformer is None:
            raise ValueError("architecture 'transformer' needs the transformer settings")
        return self

    @classmethod
    def of(cls, config: Mapping[str, Any] | Params) -> ModelParams:
        """The model settings of a train config, a model config or a saved bundle's config."""
        if isinstance(config, Params):
            config = config.model_dump()
        return cls.parse(
            {
                # Bundles saved before train.architecture existed are all Show-Attend-Tell.
                "architecture": config.get("architecture", "sat"),
                "encoder": config["encoder"],
                "decoder": config["decoder"],
                "transformer": config.get("transformer"),
            },
            "model",
        )


class LrScheduleParams(Params):
    """Learning-rate schedule: ``step`` / ``cosine`` per epoch, ``noam`` per optimiser step."""

    type: Literal["none", "step", "cosine", "noam"]
    step_size: PositiveInt
    gamma: float = Field(gt=0.0)
    eta_min: float = Field(ge=0.0)


class EarlyStoppingParams(Params):
    """Early stopping on a validation metric of greedy captions."""

    metric: Literal["bleu4", "cider"]
    patience: PositiveInt | None
    min_delta: float = Field(ge=0.0)
    restore_best: bool


class FeatureCacheParams(Params):
    """On-disk cache of frozen-encoder features."""

    enabled: bool
    dir: str
    dtype: Literal["float16", "float32"]
    batch_size: PositiveInt


class DistributedParams(Params):
    """torch.distributed data-parallel training."""

    num_processes: PositiveInt
    num_nodes: PositiveInt
    node_rank: NonNegativeInt
    master_addr: str
    master_port: int = Field(ge=0, le=65535)
    backend: Literal["auto", "nccl", "gloo"]


class TrainParams(Params):
    """Everything that trains one captioner."""

    device: Device
    seed: int
    architecture: Architecture
    lambda_aux: float = Field(ge=0.0)
    alpha_c: float = Field(ge=0.0)
    ica_mapping: ScoreMapping
    encoder: EncoderParams
    decoder: DecoderParams
    transformer: TransformerParams
    epochs: PositiveInt
    batch_size: PositiveInt
    bucket_batches: NonNegativeInt
    lr: float = Field(gt=0.0)
    encoder_lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    optimizer: Literal["adam", "sgd"]
    lr_schedule: LrScheduleParams
    grad_clip: float | None = Field(gt=0.0)
    early_stopping: EarlyStoppingParams
    val_max_images: PositiveInt | None
    max_decode_len: PositiveInt
    max_train_images: PositiveInt | None
    feature_cache: FeatureCacheParams
    checkpoint_dir: str
    resume: bool
    num_workers: NonNegativeInt
    pin_memory: bool
    amp: bool
    amp_dtype: Literal["bfloat16", "float16"]
    progress_bar: bool
    distributed: DistributedParams

    @model_validator(mode="after")
    def _noam_needs_warmup(self) -> TrainParams:
        if self.lr_schedule.type == "noam" and self.warmup_steps <= 0:
            raise ValueError(
                "lr_schedule.type noam peaks after transformer.warmup_steps optimiser steps and "
                f"needs them > 0 (architecture {self.architecture!r} has {self.warmup_steps})"
            )
        return self

    @property
    def model(self) -> ModelParams:
        """The architecture, encoder and decoder settings."""
        return ModelParams(
            architecture=self.architecture,
            encoder=self.encoder,
            decoder=self.decoder,
            transformer=self.transformer,
        )

    @property
    def head_reduction(self) -> str:
        """How the ICA loss combines multi-head maps (``transformer.head_reduction``).

        Show-Attend-Tell has one map per word, which any reduction leaves as it is.
        """
        return self.transformer.head_reduction if self.architecture == "transformer" else "mean"

    @property
    def warmup_steps(self) -> int:
        """Optimiser steps of linear learning-rate warm-up (``transformer.warmup_steps``).

        Show-Attend-Tell has none.
        """
        return self.transformer.warmup_steps if self.architecture == "transformer" else 0

    @property
    def world_size(self) -> int:
        """Processes taking part in training (1 = no DDP)."""
        return self.distributed.num_processes * self.distributed.num_nodes

    @classmethod
    def resolve(
        cls, train: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
    ) -> TrainParams:
        """The settings of one variant: ``params:train`` with its ``train_overrides`` merged in.

        Args:
            train: the shared ``params:train``.
            overrides: the variant's ``<namespace>.train_overrides`` (single keys).

        Raises:
            ParameterError: an unknown key, a wrong type or a missing key, by full name.
        """
        return cls.parse(deep_merge(train, overrides), "train")

    def replace(self, **changes: Any) -> TrainParams:
        """A copy with some keys changed (nested mappings merge), validated again."""
        return type(self).parse(deep_merge(self.to_dict(), changes), "train")
