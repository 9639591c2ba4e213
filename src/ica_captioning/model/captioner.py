"""The captioner (encoder + decoder), its bundle format, image preprocessing and greedy decoding."""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ica_captioning.data.images import to_rgb
from ica_captioning.model.decoder import AttentionDecoder, State
from ica_captioning.model.encoder import DEFAULT_ENCODER_CONFIG, Encoder

#: ImageNet channel statistics (torchvision backbones are trained with them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Default decoder settings (``train.decoder``).
DEFAULT_DECODER_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "hidden_dim": 256,
    "attention_dim": 128,
    "dropout": 0.3,
    "attention_init_scale": 10.0,
}

PAD, START, END, UNK = 0, 1, 2, 3


class Captioner(nn.Module):
    """Show-Attend-Tell captioner.

    Args:
        encoder: image encoder producing ``[B, L, D]``.
        decoder: attention decoder over those annotations.
        config: the model config (``{"encoder": {...}, "decoder": {...}}``) it was built from.
    """

    def __init__(self, encoder: Encoder, decoder: AttentionDecoder, config: Mapping[str, Any]):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = copy.deepcopy(dict(config))
        dim = encoder.out_dim
        # Per-channel standardisation of the annotation vectors, fitted on training features
        # (``fit_feature_stats``). Raw ResNet features share a large positive offset that
        # saturates the attention MLP's tanh and keeps attention uniform; standardised features
        # let attention (and the ICA loss) move it. Buffers: saved in the bundle.
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw encoder output ``[B, L, D]`` → standardised annotations ``[B, L, D]``."""
        return (raw - self.feature_mean.to(raw.dtype)) / self.feature_std.to(raw.dtype)

    @torch.no_grad()
    def fit_feature_stats(self, raw: torch.Tensor) -> None:
        """Set the standardisation from raw training features ``[N, L, D]`` (or ``[M, D]``)."""
        flat = raw.reshape(-1, raw.shape[-1]).double()
        self.feature_mean.copy_(flat.mean(0).float())
        std = flat.std(0)
        # Floor: near-constant channels (e.g. from very few images) must not be blown up.
        floor = max(1e-3, 0.01 * float(std.median()))
        self.feature_std.copy_(std.clamp_min(floor).float())

    @property
    def grid_size(self) -> int:
        """G of the attention grid (``L = G²``)."""
        return self.encoder.grid_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised images → (standardised) annotation vectors ``[B, L, D]``."""
        return self.normalize(self.encoder(images))

    def forward(
        self,
        images: torch.Tensor | None = None,
        inputs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        image_inv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced forward pass.

        Args:
            images: ``[B, 3, H, W]`` normalised images (or pass ``features``).
            inputs: ``[B, T]`` long decoder inputs (``ids[:, :-1]``).
            features: ``[B, L, D]`` annotations as :meth:`encode` returns them (for the raw
                feature cache: ``normalize(cached)``).
            image_inv: optional ``[B]`` long index: caption ``b`` belongs to image
                ``image_inv[b]`` of ``images``/``features`` (``[U, ...]``, each image encoded once).

        Returns:
            ``(logits [B, T, V], alphas [B, T, L])``.
        """
        if inputs is None:
            raise ValueError("Captioner.forward needs the decoder inputs [B, T]")
        if features is None:
            if images is None:
                raise ValueError("Captioner.forward needs images or features")
            features = self.encode(images)
        if image_inv is not None:
            features = features[image_inv]  # [U, L, D] -> [B, L, D]
        return self.decoder(features, inputs)


def model_config(train_config: Mapping[str, Any]) -> dict[str, Any]:
    """Extract the model part (encoder + decoder settings, defaults filled) of a train config."""
    enc = {**DEFAULT_ENCODER_CONFIG, **dict(train_config.get("encoder") or {})}
    dec = {**DEFAULT_DECODER_CONFIG, **dict(train_config.get("decoder") or {})}
    return {"encoder": enc, "decoder": dec}


def build_captioner(config: Mapping[str, Any], vocab_size: int) -> Captioner:
    """Build a captioner from a config ``{"encoder": {...}, "decoder": {...}}``.

    Args:
        config: model config (a train config also works: extra keys are ignored).
        vocab_size: V.

    Returns:
        The captioner (encoder weights loaded as ``encoder.weights`` says).
    """
    cfg = model_config(config)
    enc = cfg["encoder"]
    encoder = Encoder(
        backbone=enc["backbone"],
        weights=enc["weights"],
        layer=enc["layer"],
        grid_size=enc["grid_size"],
        fine_tune_blocks=enc["fine_tune_blocks"],
        init_seed=enc["init_seed"],
        image_size=enc["image_size"],
    )
    dec = cfg["decoder"]
    decoder = AttentionDecoder(
        vocab_size=vocab_size,
        feature_dim=encoder.out_dim,
        embed_dim=dec["embed_dim"],
        hidden_dim=dec["hidden_dim"],
        attention_dim=dec["attention_dim"],
        dropout=dec["dropout"],
        attention_init_scale=dec["attention_init_scale"],
    )
    return Captioner(encoder, decoder, cfg)


def load_captioner(
    bundle: Mapping[str, Any] | str | os.PathLike, device: str | torch.device = "cpu"
) -> Captioner:
    """Rebuild a trained captioner from its bundle.

    Args:
        bundle: the ``{"state_dict", "config", "vocabulary"}`` dict saved by the ``train`` pipeline
            (``baseline.model`` / ``ica.model``), or a path to a pickle of it.
        device: where to put the model.

    Returns:
        The captioner in eval mode; ``model.vocabulary`` holds the bundle's vocabulary.
    """
    if isinstance(bundle, (str, os.PathLike)):
        with open(bundle, "rb") as fh:
            bundle = pickle.load(fh)
    missing = [k for k in ("state_dict", "config", "vocabulary") if k not in bundle]
    if missing:
        raise ValueError(
            f"model bundle lacks {missing}; expected keys state_dict, config, vocabulary"
        )
    cfg = model_config(bundle["config"])
    # The state dict carries the trained weights: never load (or download) the configured ones.
    cfg["encoder"]["weights"] = "none"
    vocab_size = len(bundle["vocabulary"]["itos"])
    model = build_captioner(cfg, vocab_size)
    model.config = copy.deepcopy(dict(bundle["config"]))
    model.load_state_dict(bundle["state_dict"])
    model.vocabulary = bundle["vocabulary"]
    return model.to(device).eval()


def make_bundle(
    model: Captioner, config: Mapping[str, Any], vocabulary: Mapping[str, Any]
) -> dict[str, Any]:
    """The saved form of a trained model: CPU state dict, full config and vocabulary."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "state_dict": state,
        "config": copy.deepcopy(dict(config)),
        "vocabulary": copy.deepcopy(dict(vocabulary)),
    }


def image_transform_params(config: Mapping[str, Any]) -> int:
    """Side length images are resized to, from a model or train config."""
    enc = config.get("encoder", config)
    return int(enc.get("image_size", DEFAULT_ENCODER_CONFIG["image_size"]))


def preprocess_images(
    images: Sequence[str | os.PathLike | Image.Image],
    config: Mapping[str, Any],
    root: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Load and normalise images exactly as training does.

    Images are converted to RGB, resized (bilinear) to ``image_size × image_size`` (the
    attention grid then covers the whole image, matching how pseudo-label masks are gridded
    over the full image), scaled to [0, 1] and ImageNet-normalised.

    Args:
        images: file paths (relative to ``root`` if given — ``images.file_path`` is relative to
            ``dataset.images_dir``) or PIL images.
        config: the model config (``bundle["config"]`` or ``model.config``).
        root: folder that relative paths are joined to.

    Returns:
        ``[B, 3, S, S]`` float32.
    """
    size = image_transform_params(config)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, item in enumerate(images):
        if isinstance(item, Image.Image):
            img = item
        else:
            path = Path(root) / item if root is not None else Path(item)
            try:
                img = Image.open(path)
                img.load()
            except (OSError, ValueError) as err:
                raise OSError(f"cannot read image {path}: {err}") from err
        # to_rgb: the conversion ingestion validated (transparency -> white, 16-bit scaled).
        out[i] = np.asarray(to_rgb(img).resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def greedy_decode(
    decoder: AttentionDecoder, features: torch.Tensor, max_len: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched greedy decoding.

    Args:
        decoder: the decoder.
        features: ``[B, L, D]`` annotations.
        max_len: maximum number of generated tokens (``<end>`` included).

    Returns:
        ``(tokens [B, max_len] long, alphas [B, max_len, L], lengths [B])`` where ``lengths``
        counts the words before ``<end>`` and tokens after it are ``<pad>``.
    """
    batch = features.shape[0]
    state: State = decoder.init_state(features)
    tokens = torch.full((batch,), START, dtype=torch.long, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    out_tokens, out_alphas = [], []
    for _ in range(max_len):
        logits, alpha, state = decoder.step(features, tokens, state)
        tokens = logits.argmax(dim=-1)
        tokens = torch.where(done, torch.full_like(tokens, PAD), tokens)
        out_tokens.append(tokens)
        out_alphas.append(alpha)
        done = done | (tokens == END)
        if bool(done.all()):
            break
    toks = torch.stack(out_tokens, dim=1)
    ended = (toks == END) | (toks == PAD)
    # Words before the first <end>/<pad>: index of the first True, or the full length.
    first = torch.where(ended.any(1), ended.float().argmax(1), torch.full_like(toks[:, 0], -1))
    lengths = torch.where(first >= 0, first, torch.full_like(first, toks.shape[1]))
    return toks, torch.stack(out_alphas, dim=1), lengths


def decode_words(
    tokens: torch.Tensor, lengths: torch.Tensor, itos: Sequence[str]
) -> list[list[str]]:
    """Token ids ``[B, T]`` and lengths ``[B]`` → word lists."""
    toks = tokens.cpu().tolist()
    return [[itos[t] for t in row[:n]] for row, n in zip(toks, lengths.cpu().tolist())]
