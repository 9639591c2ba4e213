"""Schema of ``params:train`` (conf/base/parameters_train.yml) and of a model's settings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

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


class ModelParams(Params):
    """What a captioner is built from (the model part of the train settings)."""

    encoder: EncoderParams
    decoder: DecoderParams

    @classmethod
    def of(cls, config: Mapping[str, Any] | Params) -> ModelParams:
        """The model settings of a train config, a model config or a saved bundle's config."""
        if isinstance(config, Params):
            config = config.model_dump()
        return cls.parse({"encoder": config["encoder"], "decoder": config["decoder"]}, "model")


class LrScheduleParams(Params):
    """Learning-rate schedule, stepped once per epoch."""

    type: Literal["none", "step", "cosine"]
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
    lambda_aux: float = Field(ge=0.0)
    alpha_c: float = Field(ge=0.0)
    ica_mapping: ScoreMapping
    encoder: EncoderParams
    decoder: DecoderParams
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

    @property
    def model(self) -> ModelParams:
        """The encoder and decoder settings."""
        return ModelParams(encoder=self.encoder, decoder=self.decoder)

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
