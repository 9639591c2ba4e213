"""Pretrain the encoder trunk in-domain: the embedded analogue of ImageNet pretraining.

The trunk that ``train.encoder`` describes (backbone, kept blocks, grid, image size, init seed)
is trained from scratch on the **training split only**, to predict per grid cell which class
covers it (``targets.occupancy_targets``) and its mean colour, and, from its features averaged
over each detected instance, the instance's class. Linear heads sit on the ``[B, L, D]`` grid
features the captioner will attend over, so what the trunk learns is linearly readable from
exactly those features. The heads are discarded; the trunk's weights are saved under
torchvision names, so ``train.encoder.weights`` loads them like any other weights file.

A run is cached by a fingerprint of its settings and its training data (image files and their
detections), so a rerun with the same inputs loads the result instead of training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ica_captioning.data.tables import require_columns
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.images import preprocess_images
from ica_captioning.params.pretraining import PretrainingParams
from ica_captioning.params.train import EncoderParams, TrainParams
from ica_captioning.pretraining.targets import PretrainTargets, occupancy_targets
from ica_captioning.training.devices import resolve_device

logger = logging.getLogger(__name__)

#: The value of ``train.encoder.weights`` that selects the ``pretrained_encoder`` dataset.
PRETRAINED = "pretrained"
#: The split pretraining learns from; val and test images are never read.
PRETRAIN_SPLIT = "train"
#: Bump when the meaning of a cached result changes without a settings change.
CACHE_FORMAT = 1


def _split_images(images: pd.DataFrame) -> pd.DataFrame:
    """The training split's rows of the ``images`` table, sorted by image id."""
    require_columns(images, "images", ["image_id", "split", "file_path"])
    train = images[images["split"] == PRETRAIN_SPLIT].sort_values("image_id")
    if train.empty:
        raise ValueError(f"images: no image in split {PRETRAIN_SPLIT!r}; nothing to pretrain on")
    return train


def pretraining_fingerprint(
    params: PretrainingParams,
    encoder: EncoderParams,
    images: pd.DataFrame,
    detections: pd.DataFrame,
    images_dir: str | os.PathLike,
) -> str:
    """sha256 (16 hex digits) of everything that determines the pretrained weights.

    Covers the pretraining settings (less ``device``, ``progress`` and ``cache_dir``), the
    encoder architecture (``backbone``, ``layer``, ``grid_size``, ``image_size``, ``init_seed``),
    and the training split's data: each image's path, size and mtime, and the detections of
    those images. Val and test rows do not enter it, so they cannot invalidate the cache.
    """
    train = _split_images(images)
    settings = params.to_dict()
    for key in ("device", "progress", "cache_dir"):
        settings.pop(key)
    arch = {k: getattr(encoder, k) for k in ("backbone", "layer", "grid_size", "image_size")}
    arch["init_seed"] = encoder.init_seed
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_FORMAT, settings, arch], sort_keys=True).encode())
    for rel in train["file_path"].astype(str):
        stat = os.stat(Path(images_dir) / rel)
        digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    own = detections[detections["image_id"].isin(train["image_id"])]
    columns = ["image_id", "class_name", "score", "rle_counts", "height", "width", "status"]
    own = own[columns].sort_values(["image_id", "class_name", "score", "rle_counts"])
    digest.update(pd.util.hash_pandas_object(own, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


class _PretrainNet(nn.Module):
    """The encoder trunk with a per-cell class head and a per-instance class head."""

    def __init__(self, encoder: EncoderParams, num_classes: int) -> None:
        super().__init__()
        # All kept blocks and the stem are trained (fine_tune_blocks above their count).
        self.encoder = Encoder(
            backbone=encoder.backbone,
            weights="none",
            layer=encoder.layer,
            grid_size=encoder.grid_size,
            fine_tune_blocks=99,
            init_seed=encoder.init_seed,
            image_size=encoder.image_size,
        )
        dim = self.encoder.out_dim
        self.cell_head = nn.Linear(dim, num_classes + 1)  # background + classes
        self.instance_head = nn.Linear(dim, num_classes)
        self.colour_head = nn.Linear(dim, 3)  # mean RGB of the cell (normalised)

    def train(self, mode: bool = True) -> _PretrainNet:
        """Unlike the captioner's frozen encoder, BatchNorm learns its statistics here."""
        super().train(mode)  # Encoder.train puts its BatchNorm layers in eval mode ...
        for module in self.modules():  # ... so switch them back explicitly
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` → grid features ``[B, L, D]`` (float32)."""
        return self.encoder(images.contiguous(memory_format=torch.channels_last)).float()


def trunk_state_dict(encoder: Encoder) -> dict[str, torch.Tensor]:
    """The kept trunk's weights under torchvision ResNet names (``conv1.weight``, ``layer2.…``)."""
    names = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    names |= {f"blocks.{i}.": f"layer{i + 1}." for i in range(len(encoder.blocks))}
    out = {}
    for key, value in encoder.state_dict().items():
        prefix = next(p for p in names if key.startswith(p))
        out[names[prefix] + key[len(prefix) :]] = value.detach().cpu().clone()
    return out


def _losses(
    net: _PretrainNet,
    feats: torch.Tensor,
    batch: torch.Tensor,
    targets: PretrainTargets,
    tensors: Mapping[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cell and instance cross-entropies, cell colour error of one batch, and the instance hits.

    Args:
        net: the network (its heads).
        feats: ``[B, L, D]`` grid features of the batch images.
        batch: ``[B]`` rows of the batch images in ``targets``.
        targets: the targets of all training images.
        tensors: ``targets`` as tensors on the device (``cells [N, C+1, L]``, ``inst_*``,
            ``colour [N, L, 3]``).

    Returns:
        ``(cell loss, instance loss, colour loss, number of correctly classified instances)``.
    """
    cells = tensors["cells"][batch]  # [B, C+1, L]
    log_p = net.cell_head(feats).log_softmax(dim=-1)  # [B, L, C+1]
    cell_loss = -(cells.transpose(1, 2) * log_p).sum(dim=-1).mean()
    colour_loss = F.mse_loss(net.colour_head(feats), tensors["colour"][batch])
    # Instances of the batch images: features averaged over each instance's cells.
    position = torch.full((len(targets.image_ids),), -1, dtype=torch.long)
    position[batch] = torch.arange(len(batch))
    owner = position[tensors["inst_image"]]
    chosen = owner >= 0
    if not bool(chosen.any()):
        zero = feats.sum() * 0.0
        return cell_loss, zero, colour_loss, torch.zeros((), dtype=torch.long)
    pooled = torch.einsum("ald,al->ad", feats[owner[chosen]], tensors["inst_weight"][chosen])
    logits = net.instance_head(pooled)  # [A_b, C]
    labels = tensors["inst_class"][chosen]
    inst_loss = F.cross_entropy(logits, labels)
    return cell_loss, inst_loss, colour_loss, (logits.argmax(dim=-1) == labels).sum()


def fit_trunk(
    params: PretrainingParams,
    encoder: EncoderParams,
    pixels: torch.Tensor,
    targets: PretrainTargets,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Train the trunk on preprocessed images and their targets.

    Args:
        params: the pretraining settings.
        encoder: the architecture (``train.encoder``).
        pixels: ``[N, 3, S, S]`` ImageNet-normalised training images (``targets`` row order).
        targets: their targets.

    Returns:
        ``(trunk state dict under torchvision names, one history record per epoch)``.
    """
    device = resolve_device(params.device, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        net = _PretrainNet(encoder, len(targets.classes))
    net.to(device).to(memory_format=torch.channels_last)
    g2 = encoder.grid_size**2
    tensors = {
        "cells": torch.from_numpy(targets.cells).reshape(len(targets.image_ids), -1, g2),
        "inst_image": torch.from_numpy(targets.inst_image),
        "inst_class": torch.from_numpy(targets.inst_class).to(device),
        "inst_weight": torch.from_numpy(targets.inst_weight).to(device),
    }
    tensors["cells"] = tensors["cells"].to(device)
    # The classes say nothing about colour; this self-supervised target (each cell's mean
    # colour, from the image itself) keeps colour readable from the features.
    colour = F.adaptive_avg_pool2d(pixels, encoder.grid_size)  # [N, 3, G, G]
    tensors["colour"] = colour.flatten(2).transpose(1, 2).contiguous().to(device)  # [N, L, 3]
    n = len(targets.image_ids)
    steps_per_epoch = -(-n // params.batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=params.lr,
        total_steps=params.epochs * steps_per_epoch,
        pct_start=params.warmup_fraction,
    )
    dtype = torch.bfloat16 if params.precision == "bfloat16" else torch.float32
    order_rng = torch.Generator().manual_seed(params.seed)
    history: list[dict[str, Any]] = []
    net.train()
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=order_rng)
        sums = {"cell": 0.0, "instance": 0.0, "colour": 0.0, "hits": 0, "instances": 0}
        batches = range(0, n, params.batch_size)
        bar = tqdm(
            batches, desc=f"pretraining epoch {epoch}/{params.epochs}", disable=not params.progress
        )
        for first in bar:
            batch = order[first : first + params.batch_size]
            images = pixels[batch].to(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                feats = net(images)  # [B, L, D]
            cell_loss, inst_loss, colour_loss, hits = _losses(
                net, feats, batch.to(device), targets, tensors
            )
            loss = (
                params.cell_loss_weight * cell_loss
                + params.instance_loss_weight * inst_loss
                + params.colour_loss_weight * colour_loss
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            sums["cell"] += cell_loss.detach().item() * len(batch)
            sums["instance"] += inst_loss.detach().item() * len(batch)
            sums["colour"] += colour_loss.detach().item() * len(batch)
            sums["hits"] += int(hits)
            sums["instances"] += int(torch.isin(tensors["inst_image"], batch).sum())
            bar.set_postfix(loss=f"{loss.detach().item():.3f}")
        seconds = time.perf_counter() - start
        record = {
            "epoch": epoch,
            "cell_loss": sums["cell"] / n,
            "instance_loss": sums["instance"] / n,
            "colour_loss": sums["colour"] / n,
            "train_instance_accuracy": sums["hits"] / max(sums["instances"], 1),
            "lr": float(schedule.get_last_lr()[0]),
            "seconds": seconds,
            "images_per_s": n / seconds,
        }
        history.append(record)
        logger.info(
            "Pretraining epoch %d/%d: cell loss %.4f, instance loss %.4f, train instance "
            "accuracy %.3f, %.1f s",
            epoch,
            params.epochs,
            record["cell_loss"],
            record["instance_loss"],
            record["train_instance_accuracy"],
            seconds,
        )
    return trunk_state_dict(net.encoder), history


def pretrain_encoder(
    params: PretrainingParams,
    encoder: EncoderParams,
    images: pd.DataFrame,
    detections: pd.DataFrame,
    images_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Pretrain (or load from the cache) the trunk that ``encoder`` describes.

    Only rows of ``images`` with ``split == "train"`` are read; val and test images are never
    opened.

    Args:
        params: ``params:pretraining``.
        encoder: ``train.encoder`` (the architecture to pretrain).
        images: the ``images`` table (``file_path`` relative to ``images_dir``).
        detections: the ``detections`` table.
        images_dir: ``dataset.images_dir``.

    Returns:
        The bundle: ``state_dict`` (torchvision names of the kept trunk), ``fingerprint``,
        ``path`` (the cached file ``train.encoder.weights`` can load), ``classes``,
        ``image_ids`` (the training images), ``encoder`` (the architecture) and ``history``.
    """
    fingerprint = pretraining_fingerprint(params, encoder, images, detections, images_dir)
    path = Path(params.cache_dir) / f"encoder-{fingerprint}.pt"
    if path.is_file():
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: train again
            logger.warning("Pretrained encoder cache %s is unreadable (%s); retraining", path, err)
        else:
            if bundle.get("fingerprint") == fingerprint:
                logger.info("Pretrained encoder %s found in the cache; not retraining", path)
                return {**bundle, "path": str(path), "from_cache": True}
    train = _split_images(images)
    targets = occupancy_targets(
        detections, train["image_id"].tolist(), encoder.grid_size, params.score_threshold
    )
    logger.info(
        "Pretraining the %s trunk (to %s) on %d training images, %d instances of %d classes",
        encoder.backbone,
        encoder.layer,
        len(train),
        len(targets.inst_class),
        len(targets.classes),
    )
    pixels = preprocess_images(train["file_path"].tolist(), encoder.image_size, images_dir)
    state, history = fit_trunk(params, encoder, pixels, targets)
    bundle = {
        "state_dict": state,
        "fingerprint": fingerprint,
        "classes": list(targets.classes),
        "image_ids": [int(i) for i in targets.image_ids],
        "encoder": encoder.to_dict(),
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".pt.partial")
    torch.save(bundle, partial)
    os.replace(partial, path)  # never a half-written cache file under the final name
    return {**bundle, "path": str(path), "from_cache": False}


#: Encoder settings a pretrained trunk must share with the captioner that loads it.
ARCHITECTURE_KEYS = ("backbone", "layer", "grid_size", "image_size", "init_seed")


def with_pretrained_weights(params: TrainParams, bundle: Mapping[str, Any] | None) -> TrainParams:
    """``params`` with ``encoder.weights: pretrained`` replaced by the pretrained weights file.

    Other weights settings pass through unchanged. The weights file is the pretraining cache
    file named in the bundle; it is written again from the bundle when it is missing (a bundle
    copied from another machine), so the feature cache keys on a real file.

    Raises:
        ValueError: the bundle holds no weights (pretraining was skipped) or was made for
            another architecture.
    """
    if params.encoder.weights != PRETRAINED:
        return params
    if not bundle or bundle.get("state_dict") is None:
        reason = (bundle or {}).get("skipped", "no pretrained_encoder was given")
        raise ValueError(
            f"train.encoder.weights is {PRETRAINED!r} but the pretrained_encoder holds no "
            f"weights ({reason}); run the pretraining pipeline with the same parameters"
        )
    made_for = bundle["encoder"]
    wrong = {
        k: (made_for.get(k), getattr(params.encoder, k))
        for k in ARCHITECTURE_KEYS
        if made_for.get(k) != getattr(params.encoder, k)
    }
    if wrong:
        raise ValueError(
            "the pretrained_encoder was made for another encoder: "
            + ", ".join(f"train.encoder.{k} {a!r} there, {b!r} here" for k, (a, b) in wrong.items())
        )
    path = Path(bundle["path"])
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in bundle.items() if k not in ("path", "from_cache")}
        torch.save(saved, path)
    return params.replace(encoder={"weights": str(path)})
