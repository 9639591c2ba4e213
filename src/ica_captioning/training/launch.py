"""Entry point of training and its launch in one process or several DDP processes.

:func:`train_captioner` prepares the job and runs it. With
``train.distributed.num_processes × num_nodes > 1`` the same worker is started once per process
with ``torch.multiprocessing.spawn`` and wrapped in ``DistributedDataParallel`` (nccl on CUDA,
gloo on CPU). Each global batch (``batch_size`` × world size captions, drawn from one seeded
permutation) is split evenly across ranks (:func:`ica_captioning.training.batches.epoch_batches`).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

from ica_captioning.params import TrainParams
from ica_captioning.training.devices import resolve_device
from ica_captioning.training.job import TrainJob, prepare_job
from ica_captioning.training.loop import Worker, fit


def train_captioner(
    params: TrainParams,
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame | None,
    vocabulary: Mapping[str, Any],
    images_dir: str | os.PathLike,
    on_epoch_end: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one captioner.

    Args:
        params: the variant's train settings (:meth:`TrainParams.resolve`).
        images: ``images`` table.
        encoded_captions: ``encoded_captions`` table.
        pseudo_labels: ``pseudo_labels`` table.
        vocabulary: vocabulary dict.
        images_dir: ``dataset.images_dir``.
        on_epoch_end: called with the epoch number after each checkpoint (single process only;
            tests use it to interrupt a run).

    Returns:
        ``(bundle {"state_dict", "config", "vocabulary"}, per-epoch history DataFrame)``.
    """
    job = prepare_job(params, images, encoded_captions, pseudo_labels, vocabulary, images_dir)
    return run_job(job, on_epoch_end=on_epoch_end)


def run_job(
    job: TrainJob, on_epoch_end: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run a prepared job in this process or in ``num_processes`` spawned DDP processes."""
    dist_params = job.params.distributed
    if job.params.world_size <= 1:
        return fit(job, Worker(device=resolve_device(job.params.device, 0)), on_epoch_end)
    if on_epoch_end is not None:
        raise ValueError("on_epoch_end is not supported with several processes")
    port = dist_params.master_port
    if port == 0:
        if dist_params.num_nodes > 1:
            raise ValueError("train.distributed.master_port must be set for multi-node training")
        port = free_port()
    job.params = job.params.replace(distributed={"master_port": port})
    with tempfile.TemporaryDirectory() as tmp:
        job.result_path = os.path.join(tmp, "result.pt")
        torch.multiprocessing.spawn(
            _ddp_entry, args=(job,), nprocs=dist_params.num_processes, join=True
        )
        result = torch.load(job.result_path, weights_only=False)
    return result["bundle"], pd.DataFrame(result["history"])


def free_port() -> int:
    """A free TCP port on the loopback interface (for a single-node run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_entry(local_rank: int, job: TrainJob) -> None:
    """One spawned process: join the process group, train, and let local rank 0 save the result."""
    dist_params = job.params.distributed
    rank = dist_params.node_rank * dist_params.num_processes + local_rank
    device = resolve_device(job.params.device, local_rank)
    backend = dist_params.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        # Spawned CPU workers would otherwise each use every core and thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist_params.num_processes))
    dist.init_process_group(
        backend,
        init_method=f"tcp://{dist_params.master_addr}:{dist_params.master_port}",
        rank=rank,
        world_size=job.params.world_size,
    )
    try:
        worker = Worker(device=device, rank=rank, local_rank=local_rank,
                        world=job.params.world_size)  # fmt: skip
        bundle, history = fit(job, worker)
    finally:
        dist.destroy_process_group()
    if local_rank == 0 and job.result_path:
        torch.save({"bundle": bundle, "history": history.to_dict("list")}, job.result_path)
