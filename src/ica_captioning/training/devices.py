"""Where and in which precision training runs."""

from __future__ import annotations

import logging

import torch

from ica_captioning.params import TrainParams

logger = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int) -> torch.device:
    """``train.device`` → a torch device; plain ``cuda`` takes GPU ``local_rank`` (mod count).

    Raises:
        RuntimeError: CUDA requested on a machine without it.
    """
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but CUDA is not available on this machine")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def amp_dtype(params: TrainParams, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = full precision); bf16 falls back to fp16 where unsupported."""
    if not params.amp:
        return None
    if params.amp_dtype == "bfloat16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            logger.warning("bf16 is not supported on this GPU; AMP falls back to float16")
            return torch.float16
        return torch.bfloat16
    return torch.float16
