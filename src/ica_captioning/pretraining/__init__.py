"""In-domain pretraining of the encoder trunk (the embedded analogue of ImageNet pretraining).

* :mod:`~ica_captioning.pretraining.targets` - cell-occupancy and instance targets from the
  ``detections`` table;
* :mod:`~ica_captioning.pretraining.fit` - training the trunk, the cache and its fingerprint.

``train.encoder.weights: pretrained`` makes the captioner's encoder start from (and, frozen,
keep) these weights; ``conf/gpu`` keeps ImageNet weights instead.
"""

from ica_captioning.pretraining.fit import (
    PRETRAIN_SPLIT,
    PRETRAINED,
    fit_trunk,
    pretrain_encoder,
    pretraining_fingerprint,
    trunk_state_dict,
    with_pretrained_weights,
)
from ica_captioning.pretraining.targets import (
    PretrainingDataError,
    PretrainTargets,
    occupancy_targets,
)

__all__ = [
    "PRETRAINED",
    "PRETRAIN_SPLIT",
    "PretrainTargets",
    "PretrainingDataError",
    "fit_trunk",
    "occupancy_targets",
    "pretrain_encoder",
    "pretraining_fingerprint",
    "trunk_state_dict",
    "with_pretrained_weights",
]
