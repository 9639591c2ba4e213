"""Decode a split with a trained captioner: beam-search captions and teacher-forced references.

Images are read, encoded once per chunk, beam-searched, and the chunk's reference captions are
teacher-forced on the same features, so the encoder runs once per image. Attention maps are
returned flattened (``[n * L]`` float32 per caption, ``n`` words) so they fit a Parquet column.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ica_captioning.data.tables import require_columns
from ica_captioning.decoding.beam_search import beam_search_features
from ica_captioning.decoding.teacher_forcing import teacher_forced_alphas
from ica_captioning.model.cpu_attention import use_kernel
from ica_captioning.model.images import preprocess_images
from ica_captioning.model.protocol import CaptionModel
from ica_captioning.tokens import END_ID, PAD_ID, START_ID, UNK_ID

logger = logging.getLogger(__name__)

GENERATED_COLUMNS = [
    "image_id",
    "tokens",
    "caption",
    "length",
    "log_prob",
    "grid_size",
    "attention",
]
REFERENCE_COLUMNS = ["caption_id", "image_id", "tokens", "grid_size", "attention"]


def pad_ids(ids: Sequence[Sequence[int]]) -> torch.Tensor:
    """List of id lists -> ``[N, S]`` long padded with ``<pad>``."""
    width = max((len(x) for x in ids), default=0)
    out = torch.full((len(ids), max(width, 2)), PAD_ID, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.as_tensor(np.asarray(row, dtype=np.int64))
    return out


@torch.inference_mode()
def decode_split(
    model: CaptionModel,
    images: pd.DataFrame,
    references: pd.DataFrame | None,
    images_dir: str | os.PathLike,
    *,
    beam_size: int,
    max_len: int,
    length_penalty: float,
    allow_unk: bool,
    batch_size: int,
    progress: bool,
    cpu_attention: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate captions for ``images`` and teacher-force their ``references``.

    The decoding settings have no defaults here: their values are ``evaluation.*`` in
    conf/base/parameters_evaluation.yml.

    Args:
        model: any captioner of the decoder protocol (``docs/contracts.md``): a torch module
            with ``encode``, ``decoder``, ``image_size``, ``grid_size`` and ``vocabulary``, e.g.
            ``ica_captioning.model.load_captioner(bundle)``.
        images: ``image_id``, ``file_path`` (relative to ``images_dir``).
        references: ``caption_id``, ``image_id``, ``tokens`` (words), ``ids``
            (``[<start>, w..., <end>]``); ``None`` skips teacher forcing.
        images_dir: folder of the image files.
        beam_size: beam width (1 = greedy).
        max_len: maximum words per generated caption.
        length_penalty: see :func:`~ica_captioning.decoding.beam_search_features`.
        allow_unk: let the model generate ``<unk>``.
        batch_size: images per chunk.
        progress: tqdm bar.
        cpu_attention: kernel of the Show-Attend-Tell decoder's CPU attention, ``"tiled"`` or
            ``"compiled"`` (:mod:`ica_captioning.model.cpu_attention`; same scores to round-off).

    Returns:
        ``(generated, reference_attention)``: ``generated`` has :data:`GENERATED_COLUMNS` (one row
        per image, ``attention`` = ``[length * L]`` float32 row-major), ``reference_attention``
        has :data:`REFERENCE_COLUMNS` (``attention`` = ``[len(tokens) * L]``; ``tokens`` cut to
        the encoded length).
    """
    require_columns(images, "images", ["image_id", "file_path"])
    itos = list(model.vocabulary["itos"])
    # <pad> and <start> are never words; <unk> is one only when the evaluation allows it.
    banned = [PAD_ID, START_ID] + ([] if allow_unk else [UNK_ID])
    device = next(model.parameters()).device
    model.eval()

    refs_by_image: dict[int, pd.DataFrame] = {}
    if references is not None:
        require_columns(references, "references", ["caption_id", "image_id", "tokens", "ids"])
        refs_by_image = {int(k): g for k, g in references.groupby("image_id", sort=False)}

    gen_rows: list[dict[str, Any]] = []
    ref_rows: list[dict[str, Any]] = []
    image_ids = images["image_id"].astype("int64").to_numpy()
    paths = images["file_path"].astype(str).tolist()
    bar = tqdm(total=len(paths), unit="img", desc="decoding", disable=not progress)
    with use_kernel(cpu_attention):  # validates the name before any work
        for lo in range(0, len(paths), batch_size):
            chunk_ids = image_ids[lo : lo + batch_size]
            pixels = preprocess_images(
                paths[lo : lo + batch_size], model.image_size, root=images_dir
            )
            features = model.encode(pixels.to(device))  # [b, L, D]
            grid = model.grid_size
            out = beam_search_features(
                model.decoder,
                features,
                beam_size=beam_size,
                max_len=max_len,
                start_id=START_ID,
                end_id=END_ID,
                pad_id=PAD_ID,
                banned_ids=banned,
                length_penalty=length_penalty,
            )
            alphas = out.alphas.cpu().numpy().astype(np.float32)  # [b, T, L]
            for j, (iid, ids) in enumerate(zip(chunk_ids, out.token_lists())):
                words = [itos[t] for t in ids]
                gen_rows.append(
                    {
                        "image_id": int(iid),
                        "tokens": words,
                        "caption": " ".join(words),
                        "length": len(words),
                        "log_prob": float(out.scores[j]),
                        "grid_size": grid,
                        "attention": alphas[j, : len(words)].reshape(-1),
                    }
                )

            # Teacher-forced attention of this chunk's reference captions on the same features.
            groups = [(j, refs_by_image.get(int(iid))) for j, iid in enumerate(chunk_ids)]
            groups = [(j, g) for j, g in groups if g is not None and len(g)]
            if groups:
                row_index = torch.as_tensor(
                    np.concatenate([np.full(len(g), j) for j, g in groups]), device=device
                )
                chunk_refs = pd.concat([g for _, g in groups], ignore_index=True)
                ids = pad_ids(chunk_refs["ids"].tolist()).to(device)  # [N, S]
                maps = teacher_forced_alphas(
                    model.decoder, features.index_select(0, row_index), ids
                )  # [N, S-1, L]
                maps = maps.cpu().numpy().astype(np.float32)
                for k, (cid, iid, toks, cap_ids) in enumerate(
                    zip(
                        chunk_refs["caption_id"],
                        chunk_refs["image_id"],
                        chunk_refs["tokens"],
                        chunk_refs["ids"],
                    )
                ):
                    n = min(len(cap_ids) - 2, len(toks))  # words actually encoded
                    ref_rows.append(
                        {
                            "caption_id": int(cid),
                            "image_id": int(iid),
                            "tokens": list(toks)[:n],
                            "grid_size": grid,
                            "attention": maps[k, :n].reshape(-1),
                        }
                    )
            bar.update(len(chunk_ids))
    bar.close()
    generated = pd.DataFrame(gen_rows, columns=GENERATED_COLUMNS)
    reference_attention = pd.DataFrame(ref_rows, columns=REFERENCE_COLUMNS)
    return generated, reference_attention
