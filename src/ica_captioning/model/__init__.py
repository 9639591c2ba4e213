"""The Show-Attend-Tell captioner: encoder, decoder, bundle format, image preprocessing.

Public API (docs/contracts.md "decoder protocol"):

* :class:`Captioner` — ``encode(images [B,3,S,S]) -> [B,L,D]``, ``decoder.init_state(features)``,
  ``decoder.step(features, tokens [R], state) -> (logits [R,V], alpha [R,L], state)``, and a
  teacher-forced ``forward(inputs=[B,T], images=… | features=…)``
  ``-> (logits [B,T,V], alphas [B,T,L])``; consumers rely only on
  :mod:`ica_captioning.model.protocol`.
* :func:`build_captioner` / :func:`load_captioner` — from settings / from a saved bundle.
* :func:`preprocess_images` — load images exactly as training did.

Training lives in :mod:`ica_captioning.training`.
"""

from ica_captioning.model.captioner import (
    Captioner,
    build_captioner,
    load_captioner,
    make_bundle,
)
from ica_captioning.model.decoder import AttentionDecoder
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.images import IMAGENET_MEAN, IMAGENET_STD, preprocess_images
from ica_captioning.model.protocol import CaptionDecoder, CaptionModel

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AttentionDecoder",
    "CaptionDecoder",
    "CaptionModel",
    "Captioner",
    "Encoder",
    "build_captioner",
    "load_captioner",
    "make_bundle",
    "preprocess_images",
]
