"""Training loop: Adam, LR schedule, clipping, early stopping, atomic checkpoints, resume, DDP.

Entry point: :func:`train_captioner` (plain Python, no Kedro). One process runs
:func:`_train_worker` directly; with ``train.distributed.num_processes > 1`` the same worker is
started once per process with ``torch.multiprocessing.spawn`` and wrapped in
``DistributedDataParallel`` (nccl on CUDA, gloo on CPU). Each global batch (``batch_size`` ×
world size captions, drawn from one seeded permutation) is split evenly across ranks, and every
loss term is normalised by the *global* count of its units, so the averaged DDP gradient equals
the single-process gradient of the combined batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ica_captioning.model.captioner import (
    Captioner,
    build_captioner,
    decode_words,
    greedy_decode,
    make_bundle,
    model_config,
)
from ica_captioning.model.data import (
    BatchDataset,
    CaptionSet,
    ImageSource,
    build_caption_set,
    check_grid_size,
    image_table,
)
from ica_captioning.model.features import build_feature_cache
from ica_captioning.model.loss import combine, loss_terms

logger = logging.getLogger(__name__)

#: Defaults of every ``train`` parameter (conf/base/parameters_train.yml documents them).
DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    "device": "cpu",
    "seed": 0,
    "lambda_aux": 0.1,
    "alpha_c": 1.0,
    "ica_mapping": "scaled",
    "encoder": {},
    "decoder": {},
    "epochs": 4,
    "batch_size": 64,
    "bucket_batches": 20,
    "lr": 2e-3,
    "encoder_lr": 1e-4,
    "weight_decay": 0.0,
    "lr_schedule": {"type": "step", "step_size": 3, "gamma": 0.5},
    "grad_clip": 5.0,
    "early_stopping": {"metric": "bleu4", "patience": 3, "min_delta": 0.0, "restore_best": True},
    "val_max_images": 200,
    "max_decode_len": 20,
    "max_train_images": None,
    "feature_cache": {"enabled": True, "dir": "data/04_feature/feature_cache", "dtype": "float16"},
    "checkpoint_dir": "data/06_models/checkpoints",
    "resume": False,
    "num_workers": 0,
    "pin_memory": False,
    "amp": False,
    "amp_dtype": "bfloat16",
    "progress_bar": True,
    "distributed": {
        "num_processes": 1,
        "num_nodes": 1,
        "node_rank": 0,
        "master_addr": "127.0.0.1",
        "master_port": 0,
        "backend": "auto",
    },
}

#: Settings that change what is trained; a checkpoint is only resumed under the same values.
_RESUME_KEYS = (
    "seed",
    "lambda_aux",
    "alpha_c",
    "ica_mapping",
    "encoder",
    "decoder",
    "batch_size",
    "bucket_batches",
    "lr",
    "encoder_lr",
    "weight_decay",
    "lr_schedule",
    "grad_clip",
    "max_train_images",
)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dicts merge, others replace)."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(
    params: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Effective train config: defaults ← ``params:train`` ← namespace overrides.

    Args:
        params: the shared ``train`` parameters.
        overrides: the variant's ``<namespace>.train_overrides``.

    Returns:
        The merged config with encoder/decoder defaults filled in.
    """
    cfg = deep_merge(deep_merge(DEFAULT_TRAIN_CONFIG, params), overrides)
    unknown = sorted(set(cfg) - set(DEFAULT_TRAIN_CONFIG))
    if unknown:
        raise ValueError(
            f"unknown train parameters {unknown}; known: {sorted(DEFAULT_TRAIN_CONFIG)}"
        )
    cfg.update(model_config(cfg))
    if cfg["device"] not in ("cpu", "cuda") and not str(cfg["device"]).startswith("cuda:"):
        raise ValueError(f"train.device must be cpu or cuda, got {cfg['device']!r}")
    for key in ("epochs", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"train.{key} must be ≥ 1, got {cfg[key]}")
    metric = cfg["early_stopping"].get("metric", "bleu4")
    if metric not in ("bleu4", "cider"):
        raise ValueError(f"train.early_stopping.metric must be bleu4 or cider, got {metric!r}")
    return cfg


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_key(config: Mapping[str, Any], train_set: CaptionSet) -> str:
    """Checkpoint key: the training-relevant settings plus a fingerprint of the training data."""
    data = hashlib.sha256()
    data.update(train_set.caption_ids.tobytes())
    data.update(train_set.ids.tobytes())
    data.update(train_set.label_step.tobytes())
    data.update(train_set.label_grid.tobytes())
    return _fingerprint({"cfg": {k: config.get(k) for k in _RESUME_KEYS}, "data": data.hexdigest()})


def checkpoint_path(config: Mapping[str, Any], key: str) -> Path:
    """Where the run's last checkpoint lives (one folder per λ and settings hash)."""
    return Path(config["checkpoint_dir"]) / f"lambda{config['lambda_aux']:g}-{key}" / "last.pt"


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


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainJob:
    """Everything a (possibly spawned) training worker needs — picklable."""

    config: dict[str, Any]
    vocabulary: dict[str, Any]
    train_set: CaptionSet
    val_set: CaptionSet | None
    source: Any  # rows [U] -> images [U,3,S,S] or features [U,L,D]
    cached: bool
    checkpoint: Path
    result_path: str | None = None
    val_references: dict[int, list[str]] = field(default_factory=dict)


def prepare_job(
    config: Mapping[str, Any],
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame | None,
    vocabulary: Mapping[str, Any],
    images_dir: str | os.PathLike,
) -> TrainJob:
    """Build caption sets, the feature source (cache when the encoder is frozen) and paths.

    Args:
        config: resolved train config.
        images: ``images`` table.
        encoded_captions: ``encoded_captions`` table.
        pseudo_labels: ``pseudo_labels`` table (None or empty: no ICA targets).
        vocabulary: ``{"itos": [...], ...}``.
        images_dir: ``dataset.images_dir``.

    Returns:
        The job description.
    """
    grid = int(config["encoder"]["grid_size"])
    if pseudo_labels is not None:
        check_grid_size(pseudo_labels, grid)
    table = image_table(images, ["train", "val"])
    rows = dict(zip(table["image_id"].astype(int), range(len(table))))
    train_set = build_caption_set(encoded_captions, pseudo_labels, "train", rows, grid)
    train_set = train_set.subset_images(config.get("max_train_images"))
    val_set = None
    if (encoded_captions["split"] == "val").any():
        val_set = build_caption_set(encoded_captions, pseudo_labels, "val", rows, grid)
        val_set = val_set.subset_images(config.get("val_max_images"))
    needed = np.unique(
        np.concatenate([train_set.image_rows, val_set.image_rows if val_set else []]).astype(
            np.int64
        )
    )
    # Remap to the images actually used, so the cache holds nothing else.
    remap = np.full(len(table), -1, dtype=np.int64)
    remap[needed] = np.arange(len(needed))
    train_set.image_rows = remap[train_set.image_rows]
    if val_set is not None:
        val_set.image_rows = remap[val_set.image_rows]
    ids = table["image_id"].to_numpy(np.int64)[needed]
    paths = table["file_path"].astype(str).to_numpy()[needed].tolist()
    mcfg = model_config(config)
    frozen = int(mcfg["encoder"]["fine_tune_blocks"]) <= 0
    cache_cfg = config["feature_cache"]
    if frozen and cache_cfg.get("enabled", True):
        model = build_captioner(mcfg, len(vocabulary["itos"]))
        device = _device(config, 0)
        source = build_feature_cache(
            model.encoder,
            mcfg["encoder"],
            ids,
            paths,
            images_dir,
            cache_cfg.get("dir", "data/04_feature/feature_cache"),
            dtype=cache_cfg.get("dtype", "float16"),
            batch_size=int(cache_cfg.get("batch_size", 64)),
            device=device,
        )
        cached = True
    else:
        source, cached = ImageSource(paths, images_dir, mcfg), False
    itos = vocabulary["itos"]
    refs: dict[int, list[str]] = {}
    if val_set is not None:
        for img, row, n in zip(val_set.cap_image, val_set.ids, val_set.lengths):
            refs.setdefault(int(img), []).append(" ".join(itos[t] for t in row[1 : n - 1]))
    key = run_key(config, train_set)
    return TrainJob(
        config=dict(config),
        vocabulary=dict(vocabulary),
        train_set=train_set,
        val_set=val_set,
        source=source,
        cached=cached,
        checkpoint=checkpoint_path(config, key),
        val_references=refs,
    )


def train_captioner(
    config: Mapping[str, Any],
    images: pd.DataFrame,
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame | None,
    vocabulary: Mapping[str, Any],
    images_dir: str | os.PathLike,
    on_epoch_end: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train one captioner.

    Args:
        config: resolved train config (:func:`resolve_config`).
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
    job = prepare_job(config, images, encoded_captions, pseudo_labels, vocabulary, images_dir)
    return run_job(job, on_epoch_end=on_epoch_end)


def run_job(
    job: TrainJob, on_epoch_end: Callable[[int], None] | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Run a prepared job in this process or in ``num_processes`` spawned DDP processes."""
    dcfg = job.config["distributed"]
    nprocs = int(dcfg.get("num_processes", 1))
    nnodes = int(dcfg.get("num_nodes", 1))
    if nprocs * nnodes <= 1:
        return _train_worker(0, job, 0, 1, on_epoch_end)
    if on_epoch_end is not None:
        raise ValueError("on_epoch_end is not supported with several processes")
    port = int(dcfg.get("master_port", 0) or 0)
    if port == 0:
        if nnodes > 1:
            raise ValueError("train.distributed.master_port must be set for multi-node training")
        port = _free_port()
    job.config = deep_merge(job.config, {"distributed": {"master_port": port}})
    with tempfile.TemporaryDirectory() as tmp:
        job.result_path = os.path.join(tmp, "result.pt")
        torch.multiprocessing.spawn(_ddp_entry, args=(job,), nprocs=nprocs, join=True)
        result = torch.load(job.result_path, weights_only=False)
    return result["bundle"], pd.DataFrame(result["history"])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_entry(local_rank: int, job: TrainJob) -> None:
    dcfg = job.config["distributed"]
    nprocs = int(dcfg["num_processes"])
    world = nprocs * int(dcfg.get("num_nodes", 1))
    rank = int(dcfg.get("node_rank", 0)) * nprocs + local_rank
    bundle, history = _train_worker(rank, job, local_rank, world, None)
    if local_rank == 0 and job.result_path:
        torch.save({"bundle": bundle, "history": history.to_dict("list")}, job.result_path)


def _device(config: Mapping[str, Any], local_rank: int) -> torch.device:
    name = str(config["device"])
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is cuda but CUDA is not available on this machine")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def _amp_dtype(config: Mapping[str, Any], device: torch.device) -> torch.dtype | None:
    if not config.get("amp", False):
        return None
    name = str(config.get("amp_dtype", "bfloat16"))
    if name in ("bfloat16", "bf16"):
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            logger.warning("bf16 is not supported on this GPU; AMP falls back to float16")
            return torch.float16
        return torch.bfloat16
    if name in ("float16", "fp16"):
        return torch.float16
    raise ValueError(f"train.amp_dtype must be bfloat16 or float16, got {name!r}")


def _make_scheduler(
    opt: torch.optim.Optimizer, config: Mapping[str, Any]
) -> torch.optim.lr_scheduler.LRScheduler | None:
    sched = dict(config.get("lr_schedule") or {})
    kind = sched.get("type", "none")
    if kind in ("none", None):
        return None
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            opt, step_size=int(sched.get("step_size", 3)), gamma=float(sched.get("gamma", 0.5))
        )
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=int(config["epochs"]), eta_min=float(sched.get("eta_min", 0.0))
        )
    raise ValueError(f"train.lr_schedule.type must be none, step or cosine, got {kind!r}")


def _epoch_batches(
    lengths: np.ndarray,
    batch_size: int,
    world: int,
    rank: int,
    seed: int,
    epoch: int,
    bucket_batches: int = 0,
) -> list[np.ndarray]:
    """This rank's share of each global batch of a seeded permutation (same on every rank).

    With ``bucket_batches = k > 0`` the permutation is cut into windows of ``k`` global batches
    and sorted by caption length inside each window, and the batch order is then shuffled:
    batches hold captions of similar length, so far fewer padded decoder steps are computed,
    while the epoch stays a seeded random permutation.

    Args:
        lengths: ``[N]`` caption lengths.
        batch_size: captions per batch and process.
        world: number of processes.
        rank: this process.
        seed: run seed.
        epoch: epoch number (1-based).
        bucket_batches: window size in global batches (0 = no bucketing).

    Returns:
        This rank's caption-index arrays, one per step.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    perm = rng.permutation(len(lengths))
    step = batch_size * world
    if bucket_batches > 0:
        window = step * int(bucket_batches)
        perm = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.split(perm, range(window, len(perm), window))
            ]
        )
    batches = [perm[i : i + step] for i in range(0, len(perm), step)]
    if bucket_batches > 0:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [np.array_split(b, world)[rank] for b in batches]


def _features(model: Captioner, batch: Mapping[str, Any], cached: bool, device: torch.device):
    pixels = batch["pixels"].to(device, non_blocking=True)
    feats = model.normalize(pixels) if cached else model.encode(pixels)  # [U, L, D]
    return feats[batch["image_inv"].to(device)]  # [B, L, D]


@torch.no_grad()
def validate(
    model: Captioner,
    job: TrainJob,
    device: torch.device,
    amp: torch.dtype | None,
) -> dict[str, float]:
    """Validation metrics: greedy BLEU-4 (and CIDEr), teacher-forced CE/ICA, attention mass.

    The attention mass is ``Σ_l α_{t,l} · mask_l`` at every pseudo-labelled (caption, token)
    pair, averaged over pairs: the share of attention the word's step puts on the named object.
    """
    from pycocoevalcap.bleu.bleu import Bleu

    val = job.val_set
    if val is None:
        return {}
    model.eval()
    cfg = job.config
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    bs = int(cfg["batch_size"])
    # Greedy captions of the validation images.
    hyps: dict[int, list[str]] = {}
    rows = np.arange(len(val.image_ids))
    for lo in range(0, len(rows), bs):
        sel = torch.from_numpy(val.image_rows[rows[lo : lo + bs]])
        src = job.source(sel).to(device)
        with autocast:
            feats = model.normalize(src) if job.cached else model.encode(src)
            toks, _, lens = greedy_decode(model.decoder, feats, int(cfg["max_decode_len"]))
        for i, words in zip(rows[lo : lo + bs], decode_words(toks, lens, job.vocabulary["itos"])):
            hyps[int(i)] = [" ".join(words) if words else "<empty>"]
    gts = {k: job.val_references[k] for k in hyps}
    out = {"val_bleu4": float(Bleu(4).compute_score(gts, hyps, verbose=0)[0][3])}
    if cfg["early_stopping"].get("metric") == "cider":
        from pycocoevalcap.cider.cider import Cider

        out["val_cider"] = float(Cider().compute_score(gts, hyps)[0])
    # Teacher-forced losses and attention mass on the labelled pairs.
    sums = {"ce": 0.0, "ica": 0.0, "mass": 0.0, "iou": 0.0, "tok": 0, "pairs": 0}
    have_ica = _ica_available()
    for lo in range(0, len(val), bs):
        batch = val.batch(np.arange(lo, min(lo + bs, len(val))))
        batch["pixels"] = job.source(batch["images"])
        with autocast:
            feats = _features(model, batch, job.cached, device)
            logits, alphas = model(inputs=batch["inputs"].to(device), features=feats)
        tg, valid = batch["ica_targets"].to(device), batch["ica_valid"].to(device)
        terms = loss_terms(
            logits, alphas, batch["targets"].to(device), tg, valid, have_ica, cfg["ica_mapping"]
        )
        sums["ce"] += float(terms.ce_sum)
        sums["tok"] += terms.n_tokens
        if terms.ica_sum is not None:
            sums["ica"] += float(terms.ica_sum)
        mass = (alphas.float() * tg).sum(-1)  # [B, T]
        sums["mass"] += float(mass[valid].sum())
        # IoU of the cells attended above uniform (α > 1/L) with the mask.
        hot = alphas.float() > 1.0 / alphas.shape[-1]
        inter = (hot & tg).sum(-1).float()
        union = (hot | tg).sum(-1).float().clamp_min(1)
        sums["iou"] += float((inter / union)[valid].sum())
        sums["pairs"] += int(valid.sum())
    out["val_ce"] = sums["ce"] / max(sums["tok"], 1)
    out["val_ica"] = sums["ica"] / sums["pairs"] if have_ica and sums["pairs"] else math.nan
    out["val_attention_mass"] = sums["mass"] / sums["pairs"] if sums["pairs"] else math.nan
    out["val_attention_iou"] = sums["iou"] / sums["pairs"] if sums["pairs"] else math.nan
    out["val_labelled_pairs"] = float(sums["pairs"])
    return out


def _ica_available() -> bool:
    try:
        from ica_captioning.losses import ica_loss  # noqa: F401
    except ImportError:
        return False
    return True


def _train_worker(
    rank: int,
    job: TrainJob,
    local_rank: int,
    world: int,
    on_epoch_end: Callable[[int], None] | None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    cfg = job.config
    device = _device(cfg, local_rank)
    distributed = world > 1
    if distributed:
        dcfg = cfg["distributed"]
        backend = dcfg.get("backend", "auto")
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            # Spawned CPU workers would otherwise each use every core and thrash.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(dcfg["num_processes"])))
        dist.init_process_group(
            backend,
            init_method=f"tcp://{dcfg['master_addr']}:{int(dcfg['master_port'])}",
            rank=rank,
            world_size=world,
        )
    try:
        return _train_loop(rank, job, device, world, on_epoch_end, local_rank)
    finally:
        if distributed:
            dist.destroy_process_group()


def _train_loop(
    rank: int,
    job: TrainJob,
    device: torch.device,
    world: int,
    on_epoch_end: Callable[[int], None] | None,
    local_rank: int,
) -> tuple[dict[str, Any], pd.DataFrame]:
    cfg = job.config
    seed = int(cfg["seed"])
    lam = float(cfg["lambda_aux"])
    alpha_c = float(cfg["alpha_c"])
    torch.manual_seed(seed)
    model = build_captioner(cfg, len(job.vocabulary["itos"])).to(device)
    if cfg["encoder"].get("standardize", True):
        _fit_feature_stats(model, job, device)
    if job.train_set.num_labels == 0 and lam != 0.0:
        logger.warning("λ_aux = %g but the training split has no pseudo-labels: ICA term is 0", lam)
    compute_ica = lam != 0.0
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    groups = [{"params": list(model.decoder.parameters()), "lr": float(cfg["lr"])}]
    if enc_params and not job.cached:
        groups.append({"params": enc_params, "lr": float(cfg["encoder_lr"])})
    opt = torch.optim.Adam(groups, weight_decay=float(cfg["weight_decay"]))
    sched = _make_scheduler(opt, cfg)
    amp = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    es = cfg["early_stopping"]
    metric_name = "val_" + str(es.get("metric", "bleu4"))
    patience = es.get("patience")
    state = {"epoch": 0, "best": -math.inf, "best_state": None, "bad": 0, "history": []}
    state["stopped"] = False
    ckpt = job.checkpoint
    if cfg.get("resume") and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        if sched is not None and saved.get("scheduler") is not None:
            sched.load_state_dict(saved["scheduler"])
        if saved.get("scaler") is not None:
            scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng_cpu"])
        if device.type == "cuda" and saved.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(saved["rng_cuda"], device)
        state = saved["state"]
        if rank == 0:
            logger.info("Resuming from %s after epoch %d", ckpt, state["epoch"])
    elif ckpt.exists() and rank == 0:
        logger.info("train.resume is false: overwriting the checkpoint at %s", ckpt)

    ddp = model
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    trainable = [p for g in groups for p in g["params"]]
    bs = int(cfg["batch_size"])
    epochs = int(cfg["epochs"])
    loader_kw: dict[str, Any] = {"batch_size": None, "shuffle": False}
    if int(cfg["num_workers"]) > 0:
        loader_kw.update(num_workers=int(cfg["num_workers"]), persistent_workers=False)
    if cfg.get("pin_memory") and device.type == "cuda":
        loader_kw["pin_memory"] = True
    while state["epoch"] < epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        model.train()
        batches = _epoch_batches(
            job.train_set.lengths,
            bs,
            world,
            rank,
            seed,
            epoch,
            int(cfg.get("bucket_batches", 0) or 0),
        )
        loader = torch.utils.data.DataLoader(
            BatchDataset(job.train_set, batches, job.source), **loader_kw
        )
        sums = {"loss": 0.0, "ce": 0.0, "dsr": 0.0, "ica": 0.0, "n": 0}
        n_caps = n_imgs = 0
        start = time.perf_counter()
        bar = tqdm(
            loader,
            desc=f"λ={lam:g} epoch {epoch}/{epochs}",
            unit="batch",
            disable=rank != 0 or not cfg.get("progress_bar", True),
            leave=False,
        )
        for step, batch in enumerate(bar):
            inputs = batch["inputs"].to(device, non_blocking=True)
            targets = batch["targets"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                pixels = batch["pixels"].to(device, non_blocking=True)
                logits, alphas = ddp(
                    images=None if job.cached else pixels,
                    inputs=inputs,
                    features=model.normalize(pixels) if job.cached else None,
                    image_inv=batch["image_inv"].to(device),
                )
            terms = loss_terms(
                logits,
                alphas,
                targets,
                batch["ica_targets"].to(device, non_blocking=True) if compute_ica else None,
                batch["ica_valid"].to(device, non_blocking=True) if compute_ica else None,
                compute_ica,
                cfg["ica_mapping"],
            )
            norms = None
            local_bad = not _terms_finite(terms)
            if world > 1:
                counts = torch.tensor(
                    [terms.n_tokens, terms.n_dsr, terms.n_pairs, float(local_bad)],
                    dtype=torch.float64,
                    device=device,
                )
                dist.all_reduce(counts)
                norms = tuple(float(c) / world for c in counts[:3])
                local_bad = bool(counts[3] > 0)
            loss, parts = combine(terms, alpha_c, lam, norms)
            if local_bad or not torch.isfinite(loss):
                vals = {k: v.item() for k, v in parts.items()}
                raise NonFiniteLossError(
                    f"non-finite training loss at epoch {epoch}, step {step} (λ={lam:g}, terms "
                    f"{vals}); training stopped. The last good checkpoint "
                    f"({'epoch ' + str(state['epoch']) if state['epoch'] else 'none yet'}) is kept "
                    f"at {ckpt}. Lower train.lr, check the inputs, or use train.amp=false."
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.get("grad_clip"):
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(trainable, float(cfg["grad_clip"]))
            scaler.step(opt)
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
        row: dict[str, Any] = {
            "epoch": epoch,
            "lambda_aux": lam,
            "lr": float(opt.param_groups[0]["lr"]),
            "train_loss": sums["loss"] / max(sums["n"], 1),
            "train_ce": sums["ce"] / max(sums["n"], 1),
            "train_dsr": sums["dsr"] / max(sums["n"], 1),
            "train_ica": sums["ica"] / max(sums["n"], 1) if compute_ica else math.nan,
            "train_time_s": train_time,
            "captions_per_s": n_caps * world / max(train_time, 1e-9),
            "images_per_s": n_imgs * world / max(train_time, 1e-9),
        }
        row.update(validate(model, job, device, amp))
        row["epoch_time_s"] = time.perf_counter() - start
        if sched is not None:
            sched.step()
        metric = row.get(metric_name, math.nan)
        improved = job.val_set is None or (
            not math.isnan(metric) and metric > state["best"] + float(es.get("min_delta", 0.0))
        )
        if improved:
            state["best"] = metric if job.val_set is not None else state["best"]
            state["best_state"] = {
                k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            }
            state["bad"] = 0
        else:
            state["bad"] += 1
        row["best"] = bool(improved)
        state["history"].append(row)
        state["epoch"] = epoch
        if patience and state["bad"] >= int(patience):
            state["stopped"] = True
        if rank == 0 or local_rank == 0:
            if rank == 0:
                logger.info(
                    "λ=%g epoch %d: loss %.4f (ce %.4f dsr %.4f ica %.4f) %s %.4f, "
                    "attention mass %.3f, %.0f img/s, %.1f s",
                    lam,
                    epoch,
                    row["train_loss"],
                    row["train_ce"],
                    row["train_dsr"],
                    row["train_ica"],
                    metric_name,
                    metric,
                    row.get("val_attention_mass", math.nan),
                    row["images_per_s"],
                    row["epoch_time_s"],
                )
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "scaler": scaler.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "state": state,
                    "config": cfg,
                },
                ckpt,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    if es.get("restore_best", True) and state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    bundle = make_bundle(model, cfg, job.vocabulary)
    bundle["config"]["trained_epochs"] = state["epoch"]
    return bundle, pd.DataFrame(state["history"])


@torch.no_grad()
def _fit_feature_stats(model: Captioner, job: TrainJob, device: torch.device, n: int = 512) -> None:
    """Standardisation statistics from the raw features of the first ``n`` training images."""
    rows = torch.from_numpy(job.train_set.image_rows[:n])
    chunks = []
    for lo in range(0, len(rows), 64):
        src = job.source(rows[lo : lo + 64]).to(device)
        chunks.append((src if job.cached else model.encoder(src)).float())
    model.fit_feature_stats(torch.cat(chunks))


def _terms_finite(terms: Any) -> bool:
    vals = [terms.ce_sum, terms.dsr_sum] + ([terms.ica_sum] if terms.ica_sum is not None else [])
    return bool(torch.isfinite(torch.stack([v.detach().float() for v in vals])).all())
