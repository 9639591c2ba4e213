"""The training loop of one process: epochs of teacher-forced batches, validation, checkpoints.

Read :func:`fit` top to bottom: build the model, then per epoch train on every batch
(:func:`train_epoch`), validate, step the schedule, keep the best weights, save a checkpoint.
Under DDP every loss term is normalised by the *global* count of its units, so the averaged
DDP gradient equals the single-process gradient of the combined batch; the logged loss terms are
averaged over ranks (:func:`global_means`), so the history is the global batch's loss too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ica_captioning.losses.training import LossTerms, combine, loss_terms
from ica_captioning.model.captioner import Captioner, build_captioner, make_bundle
from ica_captioning.training.batches import BatchDataset, epoch_batches
from ica_captioning.training.checkpoint import restore_checkpoint, save_checkpoint
from ica_captioning.training.devices import amp_dtype
from ica_captioning.training.job import TrainJob, check_ica_labels
from ica_captioning.training.validation import validate

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Worker:
    """This process's place in the run: its device, global rank, local rank and world size."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world: int = 1


def fit(
    job: TrainJob, worker: Worker, on_epoch_end: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train the job's captioner in this process.

    Returns:
        ``(bundle {"state_dict", "config", "vocabulary"}, per-epoch history DataFrame)``.
    """
    params, device = job.params, worker.device
    # prepare_job checks this already; a job built another way must not train λ on nothing.
    check_ica_labels(params, job.train_set)
    torch.manual_seed(params.seed)
    model = build_captioner(params, len(job.vocabulary["itos"])).to(device)
    if params.encoder.standardize:
        fit_feature_stats(model, job, device)
    optimizer, trainable = make_optimizer(model, job)
    scheduler = make_scheduler(optimizer, job)
    amp = amp_dtype(params, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    state: dict[str, Any] = {"epoch": 0, "best": -math.inf, "best_state": None, "bad": 0,
                             "history": [], "stopped": False}  # fmt: skip
    if params.resume and job.checkpoint.exists():
        state = restore_checkpoint(job.checkpoint, device=device, **parts)
        if worker.rank == 0:
            logger.info("Resuming from %s after epoch %d", job.checkpoint, state["epoch"])
    elif job.checkpoint.exists() and worker.rank == 0:
        logger.info("train.resume is false: overwriting the checkpoint at %s", job.checkpoint)
    ddp = model
    if worker.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    while state["epoch"] < params.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        row = train_epoch(ddp, model, job, worker, optimizer, trainable, scaler, amp, epoch, state)
        row.update(validate(model, job, device, amp))
        row["epoch_time_s"] = time.perf_counter() - start
        if scheduler is not None:
            scheduler.step()
        track_best(state, row, model, job)
        if worker.local_rank == 0:
            if worker.rank == 0:
                log_epoch(row, job)
            save_checkpoint(job.checkpoint, device=device, state=state, params=params, **parts)
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    if params.early_stopping.restore_best and state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    bundle = make_bundle(model, params, job.vocabulary)
    bundle["config"]["trained_epochs"] = state["epoch"]
    return bundle, pd.DataFrame(state["history"])


def train_epoch(
    ddp: torch.nn.Module,
    model: Captioner,
    job: TrainJob,
    worker: Worker,
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    scaler: torch.amp.GradScaler,
    amp: torch.dtype | None,
    epoch: int,
    state: dict[str, Any],
) -> dict[str, Any]:
    """One pass over this rank's batches of the epoch.

    Returns:
        The epoch's history row so far: mean training loss terms, learning rate, throughput.
    """
    params, device, world = job.params, worker.device, worker.world
    lam, compute_ica = params.lambda_aux, params.lambda_aux != 0.0
    model.train()
    batches = epoch_batches(job.train_set.lengths, params.batch_size, world, worker.rank,
                            params.seed, epoch, params.bucket_batches)  # fmt: skip
    loader = torch.utils.data.DataLoader(
        BatchDataset(job.train_set, batches, job.source), **loader_options(job, device)
    )
    sums = {"loss": 0.0, "ce": 0.0, "dsr": 0.0, "ica": 0.0, "n": 0}
    n_caps = n_imgs = 0
    warm = 1.0
    first_step = (epoch - 1) * len(batches)  # every epoch has the same number of batches
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"λ={lam:g} epoch {epoch}/{params.epochs}",
        unit="batch",
        disable=worker.rank != 0 or not params.progress_bar,
        leave=False,
    )
    for step, batch in enumerate(bar):
        inputs = batch["inputs"].to(device, non_blocking=True)  # [B, T]
        targets = batch["targets"].to(device, non_blocking=True)  # [B, T]
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            pixels = batch["pixels"].to(device, non_blocking=True)  # [U, 3, S, S] or [U, L, D]
            logits, alphas = ddp(  # [B, T, V], [B, T, L] (Transformer: [B, T, H', L])
                images=None if job.cached else pixels,
                inputs=inputs,
                features=model.normalize(pixels) if job.cached else None,
                image_inv=batch["image_inv"].to(device),
            )
        ica_targets = ica_valid = None
        if compute_ica:
            ica_targets = batch["ica_targets"].to(device, non_blocking=True)  # [B, T, L]
            ica_valid = batch["ica_valid"].to(device, non_blocking=True)  # [B, T]
        terms = loss_terms(logits, alphas, targets, ica_targets, ica_valid, compute_ica,
                           params.ica_mapping, params.head_reduction)  # fmt: skip
        norms, bad = global_normalisers(terms, worker)
        loss, parts = combine(terms, params.alpha_c, lam, norms)
        if bad or not torch.isfinite(loss):
            last = f"epoch {state['epoch']}" if state["epoch"] else "none yet"
            raise NonFiniteLossError(
                f"non-finite training loss at epoch {epoch}, step {step} (λ={lam:g}, terms "
                f"{ {k: v.item() for k, v in parts.items()} }); training stopped. The last good "
                f"checkpoint ({last}) is kept at {job.checkpoint}. Lower train.lr, check the "
                f"inputs, or use train.amp=false."
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if params.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        warm = step_lr_factor(params.lr_schedule.type, params.warmup_steps, first_step + step)
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] *= warm
        scaler.step(optimizer)
        # The per-epoch schedule keeps its own rates: the warm-up only scales this step's.
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr
        scaler.update()
        loss_value = loss.item()
        sums["loss"] += loss_value
        for k in ("ce", "dsr", "ica"):
            if k in parts:
                sums[k] += parts[k].item()
        sums["n"] += 1
        n_caps += len(inputs)
        n_imgs += len(batch["images"])
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss_value:.3f}", img_s=f"{n_imgs * world / elapsed:.0f}")
    bar.close()
    train_time = time.perf_counter() - start
    steps = max(sums["n"], 1)
    means = {k: sums[k] / steps for k in ("loss", "ce", "dsr", "ica")}
    if world > 1:
        means = global_means(means, worker)
    return {
        "epoch": epoch,
        "lambda_aux": lam,
        "lr": float(optimizer.param_groups[0]["lr"]) * warm,  # the epoch's last step's rate
        "train_loss": means["loss"],
        "train_ce": means["ce"],
        "train_dsr": means["dsr"],
        "train_ica": means["ica"] if compute_ica else math.nan,
        "train_time_s": train_time,
        "captions_per_s": n_caps * world / max(train_time, 1e-9),
        "images_per_s": n_imgs * world / max(train_time, 1e-9),
    }


def noam_factor(warmup_steps: int, step: int) -> float:
    """Noam's schedule relative to its peak: ``min((s + 1) / w, √(w / (s + 1)))``.

    Vaswani et al.'s rate ``d_model^-0.5 · min(s^-0.5, s · w^-1.5)`` (``s`` counted from 1) is
    ``d_model^-0.5 · w^-0.5`` times this factor: linear warm-up to 1 at step ``w``, then decay as
    ``1/√s``. With ``train.lr = d_model^-0.5 · w^-0.5`` (3.125e-4 for d_model 512, 20k warm-up
    steps: ruotianluo/ImageCaptioning.pytorch's ``NoamOpt`` with factor 1) the rates are equal.
    """
    if warmup_steps <= 0:
        raise ValueError(f"the noam schedule needs warmup_steps > 0, got {warmup_steps}")
    s = step + 1
    return min(s / warmup_steps, math.sqrt(warmup_steps / s))


def step_lr_factor(schedule: str, warmup_steps: int, step: int) -> float:
    """Factor on the learning rate at optimiser step ``step`` (0-based, over the whole run).

    ``noam`` (``lr_schedule.type``): :func:`noam_factor`. Otherwise :func:`warmup_factor`, on
    top of the per-epoch schedule.
    """
    if schedule == "noam":
        return noam_factor(warmup_steps, step)
    return warmup_factor(warmup_steps, step)


def warmup_factor(warmup_steps: int, step: int) -> float:
    """Learning-rate factor of optimiser step ``step`` (0-based, counted over the whole run).

    Linear warm-up ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then 1;
    it multiplies the rate that ``lr_schedule`` (stepped per epoch) sets. ``warmup_steps = 0``:
    always 1. The step count follows from the epoch and the batches per epoch, so a resumed run
    continues the same warm-up without saving anything.
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return (step + 1) / warmup_steps


def global_normalisers(
    terms: LossTerms, worker: Worker
) -> tuple[tuple[float, float, float] | None, bool]:
    """Loss normalisers and whether any rank's terms are non-finite.

    Single process: ``(None, local check)`` — :func:`combine` then uses the local counts.
    Under DDP the token, regulariser and pair counts are summed over ranks and divided by the
    world size: DDP averages gradients, so each rank's sum over that normaliser makes the
    average equal the gradient of the global mean.
    """
    vals = [terms.ce_sum, terms.dsr_sum] + ([terms.ica_sum] if terms.ica_sum is not None else [])
    bad = not bool(torch.isfinite(torch.stack([v.detach().float() for v in vals])).all())
    if worker.world == 1:
        return None, bad
    counts = torch.tensor([terms.n_tokens, terms.n_dsr, terms.n_pairs, float(bad)],
                          dtype=torch.float64, device=worker.device)  # fmt: skip
    dist.all_reduce(counts)
    return tuple(float(c) / worker.world for c in counts[:3]), bool(counts[3] > 0)


def global_means(means: dict[str, float], worker: Worker) -> dict[str, float]:
    """The epoch's mean loss terms of the whole global batch, for the history (logging only).

    Under DDP a rank's loss is its local sum over ``global count / world``, i.e. ``world`` times
    its share of the global loss, so the global loss of a step is the *mean* over ranks of their
    losses. Every rank takes the same number of steps (:func:`epoch_batches`), so the mean over
    ranks of the per-rank epoch means is the epoch mean of the global per-step losses: the
    history then equals a single process's on the combined batches. Nothing here touches the
    gradients.
    """
    keys = sorted(means)
    values = torch.tensor([means[k] for k in keys], dtype=torch.float64, device=worker.device)
    dist.all_reduce(values)
    return {k: float(v) / worker.world for k, v in zip(keys, values.tolist())}


def track_best(state: dict[str, Any], row: dict[str, Any], model: Captioner, job: TrainJob) -> None:
    """Record the epoch in ``state``: history, best weights, patience, early stop."""
    es = job.params.early_stopping
    metric = row.get(f"val_{es.metric}", math.nan)
    improved = job.val_set is None or (
        not math.isnan(metric) and metric > state["best"] + es.min_delta
    )
    if improved:
        state["best"] = metric if job.val_set is not None else state["best"]
        state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state["bad"] = 0
    else:
        state["bad"] += 1
    row["best"] = bool(improved)
    state["history"].append(row)
    state["epoch"] = row["epoch"]
    if es.patience and state["bad"] >= es.patience:
        state["stopped"] = True


def log_epoch(row: dict[str, Any], job: TrainJob) -> None:
    """One log line per epoch."""
    metric = f"val_{job.params.early_stopping.metric}"
    logger.info(
        "λ=%g epoch %d: loss %.4f (ce %.4f dsr %.4f ica %.4f) %s %.4f, "
        "attention mass %.3f, %.0f img/s, %.1f s",
        row["lambda_aux"],
        row["epoch"],
        row["train_loss"],
        row["train_ce"],
        row["train_dsr"],
        row["train_ica"],
        metric,
        row.get(metric, math.nan),
        row.get("val_attention_mass", math.nan),
        row["images_per_s"],
        row["epoch_time_s"],
    )


def make_optimizer(
    model: Captioner, job: TrainJob
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """``train.optimizer`` over the decoder (``lr``) and fine-tuned encoder blocks (``encoder_lr``).

    ``adam`` (the default) or ``sgd``: plain SGD, no momentum, whose update ``-lr · g`` is linear
    in the gradient (so a loss scaled by any factor changes the weights; Adam's update is nearly
    scale-invariant).

    Returns:
        ``(optimizer, trained parameters)`` (the latter for gradient clipping).
    """
    params = job.params
    groups = [{"params": list(model.decoder.parameters()), "lr": params.lr}]
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if encoder_params and not job.cached:
        groups.append({"params": encoder_params, "lr": params.encoder_lr})
    if params.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=params.lr, momentum=0.0, weight_decay=params.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(groups, weight_decay=params.weight_decay)
    return optimizer, [p for g in groups for p in g["params"]]


def make_scheduler(
    optimizer: torch.optim.Optimizer, job: TrainJob
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-epoch learning-rate schedule of ``train.lr_schedule``.

    ``noam`` has none: it is a per-step factor (:func:`step_lr_factor`).
    """
    sched = job.params.lr_schedule
    if sched.type == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=sched.step_size, gamma=sched.gamma
        )
    if sched.type == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=job.params.epochs, eta_min=sched.eta_min
        )
    return None


def loader_options(job: TrainJob, device: torch.device) -> dict[str, Any]:
    """DataLoader options: items are whole batches; optional workers and pinned memory."""
    options: dict[str, Any] = {"batch_size": None, "shuffle": False}
    if job.params.num_workers > 0:
        options.update(num_workers=job.params.num_workers, persistent_workers=False)
    if job.params.pin_memory and device.type == "cuda":
        options["pin_memory"] = True
    return options


@torch.no_grad()
def fit_feature_stats(model: Captioner, job: TrainJob, device: torch.device, n: int = 512) -> None:
    """Standardisation statistics from the raw features of the first ``n`` training images."""
    rows = torch.from_numpy(job.train_set.image_rows[:n])
    chunks = []
    for lo in range(0, len(rows), 64):
        src = job.source(rows[lo : lo + 64]).to(device)
        chunks.append((src if job.cached else model.encoder(src)).float())
    model.fit_feature_stats(torch.cat(chunks))
