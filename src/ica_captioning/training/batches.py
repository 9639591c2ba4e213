"""Training data: caption tables + pseudo-labels → padded, batched tensors, and batch order.

Captions of one split are held as a padded id matrix; pseudo-labels as a CSR-style index
(per caption a range of rows in packed-bit grids), so a batch of any size is assembled with a
few vectorised NumPy gathers and one ``np.unpackbits`` — no Python loop over pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ica_captioning.data.tables import require_columns
from ica_captioning.model.images import preprocess_images
from ica_captioning.tokens import PAD_ID

logger = logging.getLogger(__name__)


@dataclass
class CaptionSet:
    """The captions of one split, ready for batching.

    Attributes:
        image_ids: ``[N_img]`` int64 image ids of the split (sorted).
        image_rows: ``[N_img]`` rows of these images in the feature source.
        cap_image: ``[N_cap]`` index into ``image_ids`` of each caption's image.
        caption_ids: ``[N_cap]`` int64.
        ids: ``[N_cap, T_max]`` int64 ``[<start>, w…, <end>]`` padded with ``PAD_ID``.
        lengths: ``[N_cap]`` number of ids (words + 2).
        label_offsets: ``[N_cap + 1]`` CSR offsets into the label arrays.
        label_step: ``[P]`` decoder step (= token position) of each pseudo-label.
        label_grid: ``[P, ceil(L / 8)]`` uint8 packed G×G masks (row-major).
        grid_cells: L = G².
    """

    image_ids: np.ndarray
    image_rows: np.ndarray
    cap_image: np.ndarray
    caption_ids: np.ndarray
    ids: np.ndarray
    lengths: np.ndarray
    label_offsets: np.ndarray
    label_step: np.ndarray
    label_grid: np.ndarray
    grid_cells: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_labels(self) -> int:
        """Number of (caption, token) pseudo-labels."""
        return int(self.label_step.shape[0])

    def subset_images(self, max_images: int | None) -> CaptionSet:
        """The captions of the first ``max_images`` images (all when None)."""
        if max_images is None or max_images >= len(self.image_ids):
            return self
        keep_cap = np.flatnonzero(self.cap_image < max_images)
        starts, ends = self.label_offsets[keep_cap], self.label_offsets[keep_cap + 1]
        rows = _ranges(starts, ends)
        return CaptionSet(
            image_ids=self.image_ids[:max_images],
            image_rows=self.image_rows[:max_images],
            cap_image=self.cap_image[keep_cap],
            caption_ids=self.caption_ids[keep_cap],
            ids=self.ids[keep_cap],
            lengths=self.lengths[keep_cap],
            label_offsets=np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64),
            label_step=self.label_step[rows],
            label_grid=self.label_grid[rows],
            grid_cells=self.grid_cells,
        )

    def batch(self, index: np.ndarray) -> dict[str, Any]:
        """Assemble a batch of captions.

        Args:
            index: ``[B]`` caption indices.

        Returns:
            Dict with ``images`` ``[U]`` (rows of the unique images in the feature source),
            ``image_inv`` ``[B]`` (caption → unique image), ``inputs`` ``[B, T]``,
            ``targets`` ``[B, T]`` (``PAD_ID`` = padding), ``ica_targets`` ``[B, T, L]`` bool,
            ``ica_valid`` ``[B, T]`` bool, ``caption_ids`` ``[B]``; ``T`` = longest caption − 1.
        """
        index = np.asarray(index, dtype=np.int64)
        img, inv = np.unique(self.cap_image[index], return_inverse=True)
        t_len = max(int(self.lengths[index].max()) - 1, 1) if len(index) else 1
        ids = self.ids[index, : t_len + 1]
        batch_size, cells = len(index), self.grid_cells
        ica_targets = np.zeros((batch_size, t_len, cells), dtype=bool)
        ica_valid = np.zeros((batch_size, t_len), dtype=bool)
        starts, ends = self.label_offsets[index], self.label_offsets[index + 1]
        rows = _ranges(starts, ends)
        if rows.size:
            owner = np.repeat(np.arange(batch_size), ends - starts)
            steps = self.label_step[rows]
            grids = np.unpackbits(self.label_grid[rows], axis=1, count=cells).astype(bool)
            # Several classes named by one token are merged (union), like instances are.
            np.logical_or.at(ica_targets, (owner, steps), grids)
            ica_valid[owner, steps] = True
        return {
            "images": torch.from_numpy(self.image_rows[img]),
            "image_inv": torch.from_numpy(inv.reshape(-1).astype(np.int64)),
            "inputs": torch.from_numpy(np.ascontiguousarray(ids[:, :-1])),
            "targets": torch.from_numpy(np.ascontiguousarray(ids[:, 1:])),
            "ica_targets": torch.from_numpy(ica_targets),
            "ica_valid": torch.from_numpy(ica_valid),
            "caption_ids": torch.from_numpy(self.caption_ids[index]),
        }


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, e)`` for each pair, vectorised."""
    counts = (ends - starts).astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts.astype(np.int64), counts) + (np.arange(total) - offsets)


def check_grid_size(pseudo_labels: pd.DataFrame, grid_size: int) -> None:
    """Fail clearly when pseudo-labels were gridded differently from the encoder.

    Args:
        pseudo_labels: the ``pseudo_labels`` table.
        grid_size: the encoder's G (``train.encoder.grid_size``).
    """
    if len(pseudo_labels) == 0:
        return
    sizes = sorted({int(g) for g in pd.unique(pseudo_labels["grid_size"])})
    if sizes != [int(grid_size)]:
        raise ValueError(
            f"pseudo_labels use grid_size {sizes} but the encoder pools to {grid_size}×{grid_size} "
            f"(train.encoder.grid_size); set matching.grid_size and train.encoder.grid_size to the "
            f"same value and rerun the matching pipeline"
        )


def build_caption_set(
    encoded_captions: pd.DataFrame,
    pseudo_labels: pd.DataFrame | None,
    split: str,
    image_rows: Mapping[int, int],
    grid_size: int,
) -> CaptionSet:
    """Collect one split's captions and pseudo-labels.

    Args:
        encoded_captions: ``caption_id, image_id, split, ids, length`` (contracts.md).
        pseudo_labels: ``caption_id, token_position, grid_size, grid`` or None.
        split: ``train`` / ``val`` / ``test``.
        image_rows: image id → row in the feature source; captions of images not in it are an
            error (an image quarantined by ingestion must not keep its captions).
        grid_size: G.

    Returns:
        The caption set (captions ordered by image id, then caption id).
    """
    require_columns(
        encoded_captions, "encoded_captions", ["caption_id", "image_id", "split", "ids"]
    )
    caps = encoded_captions[encoded_captions["split"] == split]
    caps = caps.sort_values(["image_id", "caption_id"], kind="stable").reset_index(drop=True)
    if caps.empty:
        raise ValueError(f"encoded_captions has no captions in split {split!r}")
    cap_img_ids = caps["image_id"].to_numpy(np.int64)
    unknown = ~np.isin(cap_img_ids, np.fromiter(image_rows.keys(), np.int64))
    if unknown.any():
        raise ValueError(
            f"{int(unknown.sum())} {split} captions refer to images missing from the `images` "
            f"table "
            f"(e.g. image_id {int(cap_img_ids[unknown][0])})"
        )
    image_ids, cap_image = np.unique(cap_img_ids, return_inverse=True)
    seqs = [np.asarray(s, dtype=np.int64) for s in caps["ids"]]
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    if (lengths < 2).any():
        bad = int(caps["caption_id"].iloc[int(np.argmin(lengths))])
        raise ValueError(f"encoded caption {bad} has fewer than 2 ids (<start> … <end>)")
    ids = np.full((len(seqs), int(lengths.max())), PAD_ID, dtype=np.int64)
    ids[np.arange(ids.shape[1]) < lengths[:, None]] = np.concatenate(seqs)
    cells = int(grid_size) ** 2
    nbytes = (cells + 7) // 8
    caption_ids = caps["caption_id"].to_numpy(np.int64)

    offsets = np.zeros(len(caps) + 1, dtype=np.int64)
    label_step = np.zeros(0, dtype=np.int64)
    label_grid = np.zeros((0, nbytes), dtype=np.uint8)
    if pseudo_labels is not None and len(pseudo_labels):
        require_columns(pseudo_labels, "pseudo_labels", ["caption_id", "token_position", "grid"])
        check_grid_size(pseudo_labels, grid_size)
        pl = pseudo_labels[pseudo_labels["caption_id"].isin(caption_ids)]
        cap_index = pd.Series(np.arange(len(caption_ids)), index=caption_ids)
        rows = cap_index.loc[pl["caption_id"].to_numpy()].to_numpy()
        steps = pl["token_position"].to_numpy(np.int64)
        words = lengths[rows] - 2
        inside = (steps >= 0) & (steps < words)
        if (~inside).any():
            # Captions truncated to vocabulary.max_len lose their late words: their labels
            # cannot be used. Reported, not silently dropped.
            logger.warning(
                "%d of %d %s pseudo-labels point past their (possibly truncated) caption and "
                "are not used",
                int((~inside).sum()),
                len(steps),
                split,
            )
        grids = [bytes(g) for g in pl["grid"]]
        sizes = np.fromiter((len(g) for g in grids), dtype=np.int64, count=len(grids))
        if (sizes != nbytes).any():
            i = int(np.flatnonzero(sizes != nbytes)[0])
            raise ValueError(
                f"pseudo-label of caption {int(pl['caption_id'].iloc[i])} at token "
                f"{int(steps[i])} has {int(sizes[i])} grid bytes, expected {nbytes} for "
                f"G={grid_size} (np.packbits of the G*G mask)"
            )
        packed_all = np.frombuffer(b"".join(grids), dtype=np.uint8).reshape(len(grids), nbytes)
        sel = np.flatnonzero(inside)
        packed = packed_all[sel]
        rows, steps = rows[sel], steps[sel]
        order = np.argsort(rows, kind="stable")
        label_step, label_grid = steps[order], packed[order]
        offsets[1:] = np.cumsum(np.bincount(rows, minlength=len(caps)))
    return CaptionSet(
        image_ids=image_ids,
        image_rows=np.asarray([image_rows[int(i)] for i in image_ids], dtype=np.int64),
        cap_image=cap_image.reshape(-1).astype(np.int64),
        caption_ids=caption_ids,
        ids=ids,
        lengths=lengths,
        label_offsets=offsets,
        label_step=label_step,
        label_grid=label_grid,
        grid_cells=cells,
    )


def image_table(images: pd.DataFrame, splits: Sequence[str]) -> pd.DataFrame:
    """The images of ``splits`` sorted by id: the row order of the feature source.

    Args:
        images: the ``images`` table (``image_id, file_path, split``).
        splits: the splits to keep.

    Returns:
        ``image_id, file_path, split`` with a fresh 0..N-1 index.
    """
    require_columns(images, "images", ["image_id", "file_path", "split"])
    table = images[images["split"].isin(list(splits))][["image_id", "file_path", "split"]]
    dup = table["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"images table repeats image_id {int(table['image_id'][dup].iloc[0])}")
    return table.sort_values("image_id", kind="stable").reset_index(drop=True)


class ImageSource:
    """Feature source that loads and preprocesses image files on demand.

    Args:
        paths: file paths relative to ``root`` (row order = feature-source rows).
        root: ``dataset.images_dir``.
        image_size: side S of the preprocessed images (``train.encoder.image_size``).
    """

    def __init__(self, paths: Sequence[str], root: str | Path, image_size: int):
        self.paths = list(paths)
        self.root = Path(root)
        self.image_size = int(image_size)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``[U]`` → normalised images ``[U, 3, S, S]``."""
        return preprocess_images(
            [self.paths[int(r)] for r in rows], self.image_size, root=self.root
        )


class BatchDataset(torch.utils.data.Dataset):
    """Dataset whose items are whole batches (lets DataLoader workers prefetch them).

    Args:
        captions: the caption set.
        batches: list of ``[B]`` caption-index arrays, in order.
        source: callable rows ``[U]`` → images ``[U, 3, S, S]`` or features ``[U, L, D]``.
    """

    def __init__(self, captions: CaptionSet, batches: list[np.ndarray], source: Any):
        self.captions = captions
        self.batches = batches
        self.source = source

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.captions.batch(self.batches[i])
        batch["pixels"] = self.source(batch["images"])
        return batch


def epoch_batches(
    lengths: np.ndarray,
    batch_size: int,
    world: int,
    rank: int,
    seed: int,
    epoch: int,
    bucket_batches: int,
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
