"""Caption decoding: batched beam search and teacher-forced attention maps."""

from ica_captioning.decoding.beam_search import (
    BeamSearchOutput,
    StepDecoder,
    beam_search,
    beam_search_features,
    concat_outputs,
)
from ica_captioning.decoding.teacher_forcing import reference_alphas, teacher_forced_alphas

__all__ = [
    "BeamSearchOutput",
    "StepDecoder",
    "beam_search",
    "beam_search_features",
    "concat_outputs",
    "reference_alphas",
    "teacher_forced_alphas",
]
