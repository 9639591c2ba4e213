"""Grounding of every cross-attention head and layer of a Transformer captioner.

Evaluation (and the ICA loss) look at one *selection* of a Transformer's cross-attention maps:
``train.transformer.ica_layers`` / ``ica_heads``, averaged over heads. Which layer or head to
read is the question users of Transformer captioners ask; this module answers it with numbers.
For the reference captions of a split it teacher-forces the decoder once
(:meth:`~ica_captioning.model.transformer.TransformerDecoder.forward`, all maps
``[N, Λ, H, T, L]``) and scores, against the pseudo-labels, every single head, each layer's
head mean and the mean over all layers and heads — the same per-word metrics as
``grounding_metrics[reference/pseudo_labels]``
(:func:`ica_captioning.metrics.grounding.word_scores`).

The *best single head* is chosen on one split (e.g. ``val``) and scored on another (e.g.
``test``, :func:`best_head`), so its score is not an oracle on the evaluated split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ica_captioning.data.tables import require_columns
from ica_captioning.decoding.runner import pad_ids
from ica_captioning.matching.grid import unpack_grid
from ica_captioning.metrics.grounding import REFERENCE, WORD_METRICS, word_scores
from ica_captioning.metrics.objects import PSEUDO_LABELS
from ica_captioning.model.images import preprocess_images
from ica_captioning.model.protocol import CaptionModel
from ica_captioning.reports.tables import grounding_column

#: Label of the mean over every layer and head.
ALL_MEAN = "all.mean"
#: Column order of :func:`head_grounding`.
HEAD_COLUMNS = ["selection", "layer", "head", "metric", "value", "count"]


@dataclass(frozen=True)
class Selection:
    """A set of cross-attention maps, averaged: ``layer`` / ``head`` are −1 for "all"."""

    label: str
    layer: int
    head: int


def head_selections(num_layers: int, num_heads: int) -> list[Selection]:
    """Every single head (``L<l>.H<h>``), each layer's mean (``L<l>.mean``), :data:`ALL_MEAN`."""
    singles = [
        Selection(f"L{layer}.H{h}", layer, h)
        for layer in range(num_layers)
        for h in range(num_heads)
    ]
    means = [Selection(f"L{layer}.mean", layer, -1) for layer in range(num_layers)]
    return [*singles, *means, Selection(ALL_MEAN, -1, -1)]


def is_multi_head(model: CaptionModel) -> bool:
    """Whether the model's decoder exposes per-layer, per-head cross-attention (the Transformer)."""
    decoder = model.decoder
    return all(hasattr(decoder, a) for a in ("num_layers", "num_heads", "max_len"))


def _pairs(references: pd.DataFrame, pseudo_labels: pd.DataFrame) -> pd.DataFrame:
    """The pseudo-labels of ``references`` inside their encoded captions (the evaluated words)."""
    pl = pseudo_labels[pseudo_labels["caption_id"].isin(references["caption_id"])]
    words = dict(
        zip(
            references["caption_id"],
            [min(len(i) - 2, len(t)) for i, t in zip(references["ids"], references["tokens"])],
        )
    )
    inside = pl["token_position"] < pl["caption_id"].map(words)
    return pl[inside][["caption_id", "image_id", "token_position", "grid_size", "grid"]]


@torch.inference_mode()
def head_maps(
    model: CaptionModel,
    images: pd.DataFrame,
    references: pd.DataFrame,
    pairs: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    batch_size: int,
) -> np.ndarray:
    """Every layer's and head's teacher-forced map of each pair's word.

    Args:
        model: a captioner whose decoder is a Transformer (:func:`is_multi_head`).
        images: ``image_id``, ``file_path`` of the images of ``references``.
        references: ``caption_id``, ``image_id``, ``ids`` (``[<start>, w…, <end>]``).
        pairs: ``caption_id``, ``token_position`` of the scored words.
        images_dir: folder of the image files.
        batch_size: images per chunk.

    Returns:
        ``[P, Λ, H, L]`` float32, row ``p`` the maps of the step predicting word
        ``token_position`` of caption ``caption_id`` (``decode_split``'s alignment).
    """
    require_columns(images, "images", ["image_id", "file_path"])
    require_columns(references, "references", ["caption_id", "image_id", "ids"])
    decoder = model.decoder
    device = next(model.parameters()).device
    model.eval()
    pair_caption = pairs["caption_id"].to_numpy()
    pair_position = torch.tensor(pairs["token_position"].to_numpy(dtype=np.int64))
    cells = model.grid_size**2
    out = np.zeros((len(pairs), decoder.num_layers, decoder.num_heads, cells), np.float32)
    refs = references[references["caption_id"].isin(set(pair_caption.tolist()))]
    by_image = {int(k): g for k, g in refs.groupby("image_id", sort=False)}
    image_ids = images["image_id"].astype("int64").tolist()
    paths = images["file_path"].astype(str).tolist()
    for lo in range(0, len(paths), batch_size):
        chunk = [(j, by_image.get(iid)) for j, iid in enumerate(image_ids[lo : lo + batch_size])]
        chunk = [(j, g) for j, g in chunk if g is not None]
        if not chunk:
            continue
        pixels = preprocess_images(paths[lo : lo + batch_size], model.image_size, root=images_dir)
        features = model.encode(pixels.to(device))  # [b, L, D]
        rows = torch.as_tensor(np.concatenate([np.full(len(g), j) for j, g in chunk]))
        chunk_refs = pd.concat([g for _, g in chunk], ignore_index=True)
        ids = pad_ids(chunk_refs["ids"].tolist()).to(device)  # [N, S]
        _, maps = decoder(features.index_select(0, rows.to(device)), ids[:, :-1])
        # The chunk's pairs: their caption's row n in the chunk and their position.
        row_in_chunk = pd.Series(np.arange(len(chunk_refs)), index=chunk_refs["caption_id"])
        mine = np.flatnonzero(np.isin(pair_caption, chunk_refs["caption_id"].to_numpy()))
        n = torch.tensor(row_in_chunk.loc[pair_caption[mine]].to_numpy(), device=maps.device)
        picked = maps[n, :, :, pair_position[mine].to(maps.device)]  # [P', Λ, H, L]
        out[mine] = picked.float().cpu().numpy()
    return out


def head_grounding(
    model: CaptionModel,
    images: pd.DataFrame,
    references: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    mass: float,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Reference-caption grounding (against the pseudo-labels) of every head and layer.

    Args:
        model: a captioner with a Transformer decoder (:func:`is_multi_head`).
        images: the evaluated images (``image_id``, ``file_path``).
        references: their reference captions (``caption_id``, ``image_id``, ``tokens``, ``ids``).
        pseudo_labels: the matching stage's ``pseudo_labels`` (the words scored and their masks).
        images_dir: folder of the image files.
        mass: attention-mass target of ``attention_iou_mass50``.
        batch_size: images per chunk.

    Returns:
        :data:`HEAD_COLUMNS`: one row per :func:`head_selections` entry and
        :data:`~ica_captioning.metrics.grounding.WORD_METRICS` metric (mean over words, and the
        number of words).

    Raises:
        ValueError: the model has no per-head cross-attention.
    """
    if not is_multi_head(model):
        raise ValueError(
            "head_grounding needs a Transformer decoder (per-layer, per-head cross-attention); "
            f"got {type(model.decoder).__name__}"
        )
    require_columns(references, "references", ["caption_id", "image_id", "tokens", "ids"])
    pairs = _pairs(references, pseudo_labels).reset_index(drop=True)
    num_layers, num_heads = model.decoder.num_layers, model.decoder.num_heads
    rows = []
    if pairs.empty:
        for s in head_selections(num_layers, num_heads):
            rows += [(s.label, s.layer, s.head, m, np.nan, 0) for m in WORD_METRICS]
        return pd.DataFrame(rows, columns=HEAD_COLUMNS)
    cells = model.grid_size**2
    bad = pairs["grid_size"].astype(int) ** 2 != cells
    if bad.any():
        raise ValueError(
            f"pseudo-labels of caption {pairs.loc[bad, 'caption_id'].iloc[0]} have grid "
            f"{int(pairs.loc[bad, 'grid_size'].iloc[0])}, the model {model.grid_size}"
        )
    maps = head_maps(model, images, references, pairs, images_dir, batch_size=batch_size)
    masks = np.stack(
        [unpack_grid(g, int(s)).reshape(-1) for g, s in zip(pairs.grid, pairs.grid_size)]
    )
    for s in head_selections(num_layers, num_heads):
        layers = slice(None) if s.layer < 0 else slice(s.layer, s.layer + 1)
        heads = slice(None) if s.head < 0 else slice(s.head, s.head + 1)
        alphas = maps[:, layers, heads].mean(axis=(1, 2))  # [P, L]
        scores = word_scores(alphas, masks, mass)
        rows += [
            (s.label, s.layer, s.head, m, float(scores[m].mean()), len(pairs)) for m in WORD_METRICS
        ]
    return pd.DataFrame(rows, columns=HEAD_COLUMNS)


def best_head(
    chosen_on: pd.DataFrame,
    scored_on: pd.DataFrame,
    metric: str = "attention_correctness",
) -> tuple[str, float, float]:
    """The single head with the highest ``metric`` on one split, and its value on another.

    Args:
        chosen_on: :func:`head_grounding` of the split that picks the head (e.g. ``val``).
        scored_on: :func:`head_grounding` of the split it is scored on (e.g. ``test``).
        metric: the metric maximised.

    Returns:
        ``(selection label, value on chosen_on, value on scored_on)``.

    Raises:
        ValueError: ``chosen_on`` has no finite single-head value of ``metric``.
    """
    singles = chosen_on[(chosen_on["head"] >= 0) & (chosen_on["metric"] == metric)]
    singles = singles[np.isfinite(singles["value"].to_numpy(dtype=float))]
    if singles.empty:
        raise ValueError(f"no single-head {metric} to choose from")
    top = singles.loc[singles["value"].idxmax()]
    scored = scored_on[
        (scored_on["selection"] == top["selection"]) & (scored_on["metric"] == metric)
    ]
    value = float(scored["value"].iloc[0]) if len(scored) else float("nan")
    return str(top["selection"]), float(top["value"]), value


def head_result_rows(
    model: CaptionModel,
    images: pd.DataFrame,
    references: pd.DataFrame,
    pseudo_labels: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    split: str,
    mass: float,
    batch_size: int,
    chooser_images: pd.DataFrame | None = None,
    chooser_references: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`head_grounding` as long result rows ``split, metric, value`` (the grid's).

    Every :func:`head_selections` entry gets ``<grounding column> @<selection>`` for attention
    correctness and the two IoUs (reference captions, pseudo-labels). With the chooser split's
    images and references, the single head with the best attention correctness there also gets
    ``attention_correctness [reference/pseudo_labels] @best_head`` (its value on ``split``) and
    ``best_head_index`` (``layer · H + head``).
    """
    scored = head_grounding(
        model, images, references, pseudo_labels, images_dir, mass=mass, batch_size=batch_size
    )
    scored = scored[scored["metric"] != "attention_correctness_chance"]
    names = [
        f"{grounding_column(m, REFERENCE, PSEUDO_LABELS)} @{s}"
        for m, s in zip(scored["metric"], scored["selection"])
    ]
    rows = pd.DataFrame({"split": split, "metric": names, "value": scored["value"]})
    if chooser_images is None or chooser_references is None:
        return rows
    chooser = head_grounding(
        model,
        chooser_images,
        chooser_references,
        pseudo_labels,
        images_dir,
        mass=mass,
        batch_size=batch_size,
    )
    label, _, value = best_head(chooser, scored)
    layer, head = (int(x[1:]) for x in label.split("."))
    column = grounding_column("attention_correctness", REFERENCE, PSEUDO_LABELS)
    best = pd.DataFrame(
        {
            "split": split,
            "metric": [f"{column} @best_head", "best_head_index"],
            "value": [value, float(layer * model.decoder.num_heads + head)],
        }
    )
    return pd.concat([rows, best], ignore_index=True)
