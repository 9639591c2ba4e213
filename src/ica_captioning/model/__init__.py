"""Show-Attend-Tell captioner with the ICA auxiliary loss: model, data, training.

Public API (docs/contracts.md "model interface"):

* :class:`Captioner` — ``encode(images [B,3,H,W]) -> [B,L,D]``, ``decoder.init_state(features)``,
  ``decoder.step(features, tokens [B], state) -> (logits [B,V], alpha [B,L], state)`` (or
  ``K`` rows per image with ``features [N,L,D]``, ``tokens [N·K]``: ``image_state_slots``), and a
  teacher-forced ``forward(inputs=[B,T], images=… | features=…)``
  ``-> (logits [B,T,V], alphas [B,T,L])``.
* :func:`load_captioner` — rebuild a model from a ``{"state_dict", "config", "vocabulary"}`` bundle.
* :func:`preprocess_images` — load images exactly as training did.
* :func:`train_captioner` — train one model from the stage tables (no Kedro needed).
"""

from ica_captioning.model.captioner import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Captioner,
    build_captioner,
    decode_words,
    greedy_decode,
    load_captioner,
    make_bundle,
    preprocess_images,
)
from ica_captioning.model.decoder import AttentionDecoder
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.trainer import (
    DEFAULT_TRAIN_CONFIG,
    NonFiniteLossError,
    resolve_config,
    train_captioner,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AttentionDecoder",
    "Captioner",
    "DEFAULT_TRAIN_CONFIG",
    "Encoder",
    "NonFiniteLossError",
    "build_captioner",
    "decode_words",
    "greedy_decode",
    "load_captioner",
    "make_bundle",
    "preprocess_images",
    "resolve_config",
    "train_captioner",
]
