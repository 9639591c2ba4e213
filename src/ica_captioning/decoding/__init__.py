"""Caption decoding: batched beam search and teacher-forced attention maps."""

from ica_captioning.decoding.beam_search import (
    BeamSearchOutput,
    StepDecoder,
    beam_search,
    beam_search_features,
    concat_outputs,
)
from ica_captioning.decoding.runner import decode_split
from ica_captioning.decoding.teacher_forcing import teacher_forced_alphas, teacher_forced_heads

__all__ = [
    "BeamSearchOutput",
    "StepDecoder",
    "beam_search",
    "beam_search_features",
    "concat_outputs",
    "decode_split",
    "teacher_forced_alphas",
    "teacher_forced_heads",
]
