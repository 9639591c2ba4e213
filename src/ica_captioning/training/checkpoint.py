"""Checkpoints: one ``last.pt`` per run, written atomically after every epoch, and resume.

A run's folder is keyed by λ and a hash of the settings that change what is trained plus a
fingerprint of the training data (:func:`ica_captioning.training.job.run_key`), so a checkpoint
is only resumed under the same settings and data.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ica_captioning.params import TrainParams

logger = logging.getLogger(__name__)


class CorruptCheckpointError(RuntimeError):
    """``train.resume`` is true but the run's ``last.pt`` cannot be read or restored."""


def checkpoint_path(params: TrainParams, key: str) -> Path:
    """Where the run's last checkpoint lives (one folder per λ and settings hash)."""
    return Path(params.checkpoint_dir) / f"lambda{params.lambda_aux:g}-{key}" / "last.pt"


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    state: dict[str, Any],
    params: TrainParams,
) -> None:
    """Everything a resumed run needs: weights, optimiser, schedule, scaler, RNG and progress."""
    atomic_save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "state": state,
            "config": params.to_dict(),
        },
        path,
    )


def restore_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Returns:
        The saved training progress (``epoch``, ``best``, ``best_state``, ``bad``,
        ``history``, ``stopped``).

    Raises:
        CorruptCheckpointError: the file is truncated, not a checkpoint, or does not fit the
            model and optimiser; the message names the file and how to start afresh.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler") is not None:
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda" and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"], device)
        return saved["state"]
    except Exception as err:  # noqa: BLE001 - whatever broke, the checkpoint cannot be resumed
        raise CorruptCheckpointError(
            f"train.resume is true but the checkpoint {path} cannot be restored "
            f"({type(err).__name__}: {str(err)[:300]}); it is truncated, corrupt or not a "
            f"checkpoint of this run. To start afresh delete {path}, or set train.resume=false "
            "(the run then overwrites it)."
        ) from err
