"""Report figures: per-word attention over the image (every model; per head too) and curves.

Figures are built with the object-oriented Matplotlib API (``matplotlib.figure.Figure``), so no
pyplot state or interactive backend is involved; the Kedro ``MatplotlibDataset`` saves them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image

from ica_captioning.decoding.teacher_forcing import teacher_forced_heads
from ica_captioning.model.images import preprocess_images
from ica_captioning.tokens import END_ID, START_ID, UNK_ID
from ica_captioning.variants import LABELS


def upsample_attention(att: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of one ``[G, G]`` attention map to ``[height, width]``."""
    img = Image.fromarray(np.asarray(att, dtype=np.float32), mode="F")
    return np.asarray(img.resize((int(width), int(height)), Image.BILINEAR))


def attention_figure(
    image: np.ndarray,
    rows: Sequence[tuple[str, Sequence[str], np.ndarray]],
    max_words: int = 12,
    title: str = "",
    overlay_alpha: float = 0.6,
) -> Figure:
    """Show-Attend-Tell style figure: the image, then one panel per word with its attention.

    Args:
        image: ``[H, W, 3]`` uint8 image.
        rows: per model ``(label, words, maps [n, G, G])``; one figure row each.
        max_words: words shown per row (the rest are listed in the row label).
        title: figure title.
        overlay_alpha: opacity of the heat map where attention is highest (it fades to fully
            transparent where attention is zero).

    Returns:
        The figure.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    height, width = image.shape[:2]
    cols = 1 + max(1, min(max_words, max((len(w) for _, w, _ in rows), default=1)))
    fig = Figure(figsize=(1.6 * cols, 2.1 * max(1, len(rows))), dpi=100)
    axes = fig.subplots(max(1, len(rows)), cols, squeeze=False)
    # One colour scale for the whole figure (both models, all words): a diffuse map stays faint
    # and a peaked one bright, so the rows can be compared at a glance.
    shown = [np.asarray(m, dtype=np.float32)[: min(len(w), max_words)] for _, w, m in rows]
    vmax = max((float(m.max()) for m in shown if m.size), default=1.0) or 1.0
    cmap = matplotlib.colormaps["jet"]
    for r, (label, words, _) in enumerate(rows):
        maps = shown[r]
        ax = axes[r, 0]
        ax.imshow(image)
        caption = " ".join(words) if len(words) else "(empty caption)"
        ax.set_title(f"{label}\n{_wrap(caption, 26)}", fontsize=7, loc="left")
        for c in range(1, cols):
            ax = axes[r, c]
            i = c - 1
            if i < len(maps):
                heat = np.clip(upsample_attention(maps[i], height, width) / vmax, 0.0, 1.0)
                rgba = cmap(heat)  # [H, W, 4]
                # Transparent where the word does not attend: the image shows through.
                rgba[..., 3] = overlay_alpha * heat
                ax.imshow(image)
                ax.imshow(rgba)
                ax.set_title(words[i], fontsize=8)
            else:
                ax.set_visible(False)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_sample(image_ids: Sequence[int] | np.ndarray, num_images: int, seed: int) -> list[int]:
    """The images drawn for the attention figures (seeded, without replacement).

    Args:
        image_ids: ``[N]`` evaluated image ids, in the ``evaluation_images`` order (the draw
            depends on it).
        num_images: images wanted (all ``N`` when there are fewer).
        seed: seed of the draw.

    Returns:
        The drawn ids, ascending.
    """
    ids = np.asarray(image_ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return [int(i) for i in sorted(rng.choice(ids, size=min(num_images, len(ids)), replace=False))]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB pixels of an image file."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def caption_attention(generated: pd.DataFrame, image_id: int) -> tuple[list[str], np.ndarray]:
    """Words and attention maps of one image's generated caption.

    Args:
        generated: ``generated_captions`` table indexed by ``image_id`` (``tokens``,
            ``grid_size``, ``attention`` flattened ``[n * G * G]``).
        image_id: the image.

    Returns:
        ``(words, maps)``: the ``n`` words and their ``[n, G, G]`` float32 maps.
    """
    rec = generated.loc[image_id]
    g = int(rec["grid_size"])
    maps = np.asarray(rec["attention"], dtype=np.float32).reshape(-1, g, g)
    return list(rec["tokens"]), maps


def attention_figures(
    generated: Mapping[str, pd.DataFrame],
    evaluation_images: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    num_images: int,
    max_words: int,
    seed: int,
    overlay_alpha: float,
) -> dict[str, Figure]:
    """Per-word attention of several models on a seeded sample of the evaluated images.

    Args:
        generated: variant -> its ``generated_captions`` (one figure row each, in this order,
            labelled with :data:`ica_captioning.variants.LABELS`).
        evaluation_images: ``image_id`` and ``file_path`` (relative to ``images_dir``).
        images_dir: ``dataset.images_dir``.
        num_images: images drawn (:func:`figure_sample`).
        max_words: words shown per caption.
        seed: seed of the image sample.
        overlay_alpha: see :func:`attention_figure`.

    Returns:
        ``{"image_<id>.png": figure}``, ascending image ids.
    """
    ids = evaluation_images["image_id"].astype("int64").to_numpy()
    paths = dict(zip(ids.tolist(), evaluation_images["file_path"]))
    tables = {variant: table.set_index("image_id") for variant, table in generated.items()}
    figures = {}
    for iid in figure_sample(ids, num_images, seed):
        rows = [
            (LABELS.get(variant, variant), *caption_attention(table, iid))
            for variant, table in tables.items()
        ]
        figures[f"image_{iid}.png"] = attention_figure(
            load_image(Path(images_dir) / paths[iid]),
            rows,
            max_words=max_words,
            title=f"image {iid}",
            overlay_alpha=overlay_alpha,
        )
    return figures


def head_attention_figure(
    image: np.ndarray,
    label: str,
    words: Sequence[str],
    maps: np.ndarray,
    map_labels: Sequence[str],
    *,
    max_words: int,
    title: str,
    overlay_alpha: float,
) -> Figure:
    """One model's caption with each word's attention averaged over heads, then per head.

    Args:
        image: ``[H, W, 3]`` uint8 image.
        label: the model's label.
        words: the caption's ``n`` words.
        maps: ``[n, H', G, G]``: the ``H'`` maps of every word (the maps the decoder's ``step``
            returns: for the Transformer its selected layers' heads).
        map_labels: the ``H'`` row labels (``layer 2 head 1`` ...).
        max_words: words shown per row.
        title: figure title.
        overlay_alpha: see :func:`attention_figure`.

    Returns:
        The figure: first row the mean over the ``H'`` maps (what evaluation scores), then one
        row per map, all on one colour scale.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4 or maps.shape[0] != len(words) or maps.shape[1] != len(map_labels):
        raise ValueError(
            f"maps must be [words, maps, G, G] = [{len(words)}, {len(map_labels)}, G, G], got "
            f"{maps.shape}"
        )
    rows = [(f"{label}: mean of {len(map_labels)} maps", words, maps.mean(axis=1))]
    rows += [(f"{label}: {name}", words, maps[:, h]) for h, name in enumerate(map_labels)]
    return attention_figure(
        image, rows, max_words=max_words, title=title, overlay_alpha=overlay_alpha
    )


def map_labels(decoder: object) -> list[str]:
    """Row labels of the maps a decoder's ``step`` returns (1-based layers and heads)."""
    chosen = getattr(decoder, "attention_maps", None)
    if chosen is None:
        return ["attention"]
    return [f"layer {layer + 1} head {head + 1}" for layer, head in chosen]


@torch.inference_mode()
def head_attention_figures(
    models: Mapping[str, object],
    generated: Mapping[str, pd.DataFrame],
    evaluation_images: pd.DataFrame,
    images_dir: str | os.PathLike,
    *,
    num_images: int,
    max_words: int,
    seed: int,
    overlay_alpha: float,
) -> dict[str, Figure]:
    """Per-head attention of each model's generated caption on the sampled images.

    The images are those of :func:`attention_figures` (same ``seed``). Each caption is teacher
    forced through its model to recover the maps of every head that ``step`` returns (beam
    search keeps only their mean).

    Args:
        models: variant -> captioner of the decoder protocol (``load_captioner``), on the CPU.
        generated: variant -> its ``generated_captions``.
        evaluation_images: ``image_id`` and ``file_path`` (relative to ``images_dir``).
        images_dir: ``dataset.images_dir``.
        num_images: images drawn (:func:`figure_sample`).
        max_words: words shown per caption.
        seed: seed of the image sample.
        overlay_alpha: see :func:`attention_figure`.

    Returns:
        ``{"image_<id>_<variant>.png": figure}`` (:func:`head_attention_figure`).
    """
    ids = evaluation_images["image_id"].astype("int64").to_numpy()
    paths = dict(zip(ids.tolist(), evaluation_images["file_path"]))
    tables = {variant: table.set_index("image_id") for variant, table in generated.items()}
    figures = {}
    for iid in figure_sample(ids, num_images, seed):
        image = load_image(Path(images_dir) / paths[iid])
        for variant, model in models.items():
            words, _ = caption_attention(tables[variant], iid)
            stoi = {w: i for i, w in enumerate(model.vocabulary["itos"])}
            # <end> is appended so that a caption without words still has one step.
            tokens = [START_ID, *(stoi.get(w, UNK_ID) for w in words), END_ID]
            pixels = preprocess_images([paths[iid]], model.image_size, root=images_dir)
            device = next(model.parameters()).device
            features = model.encode(pixels.to(device))  # [1, L, D]
            heads = teacher_forced_heads(model.decoder, features, torch.tensor([tokens]))
            g = model.grid_size
            maps = heads[0, : len(words)].cpu().numpy().reshape(len(words), -1, g, g)
            figures[f"image_{iid}_{variant}.png"] = head_attention_figure(
                image,
                LABELS.get(variant, variant),
                words,
                maps,
                map_labels(model.decoder),
                max_words=max_words,
                title=f"image {iid}, {LABELS.get(variant, variant)}: attention per head",
                overlay_alpha=overlay_alpha,
            )
    return figures


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    return "\n".join(lines)


def _curve_columns(histories: Mapping[str, pd.DataFrame]) -> list[str]:
    """History columns worth a panel: numeric, not boolean, not timing, varying in some model."""
    columns: list[str] = []
    for hist in histories.values():
        for col in hist.columns:
            if col == "epoch" or col in columns:
                continue
            series = hist[col]
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                continue
            # Wall-clock time and throughput depend on the machine, not on the model.
            if "time" in col or col.endswith("per_s"):
                continue
            columns.append(col)
    # Settings that stay fixed within every run (lambda_aux, a constant lr) need no curve.
    return [
        c
        for c in columns
        if any(c in h.columns and h[c].nunique(dropna=True) > 1 for h in histories.values())
    ]


def training_curves_figure(histories: Mapping[str, pd.DataFrame], title: str = "") -> Figure:
    """One panel per training-history column that changes over epochs, one line per model.

    Numeric columns are drawn except booleans (``best``), timing/throughput columns and columns
    that are constant within every model (settings such as ``lambda_aux``).

    Args:
        histories: label -> training history (one row per epoch; ``epoch`` column used as x when
            present).
        title: figure title.

    Returns:
        The figure (a single "no training history" panel when nothing changes or is empty).
    """
    columns = _curve_columns(histories)
    n = max(1, len(columns))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(4.0 * ncols, 2.8 * nrows + 0.4), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, col in enumerate(columns):
        ax = axes[k // ncols, k % ncols]
        for label, hist in histories.items():
            if col not in hist.columns or hist.empty:
                continue
            x = hist["epoch"] if "epoch" in hist.columns else np.arange(1, len(hist) + 1)
            ax.plot(x, hist[col], marker="o", markersize=3, label=label)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for k in range(len(columns), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    if not columns:
        ax = axes[0, 0]
        ax.set_visible(True)
        ax.text(0.5, 0.5, "no training history", ha="center", va="center")
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
        fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (2.8 * nrows + 0.4)))
    else:
        fig.tight_layout()
    return fig
