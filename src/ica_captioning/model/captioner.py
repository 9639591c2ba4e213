"""The captioner (encoder + decoder) and its saved form, the model bundle."""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ica_captioning.model.decoder import AttentionDecoder
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.transformer import TransformerDecoder
from ica_captioning.params import ModelParams, Params


class Captioner(nn.Module):
    """Encoder + attention decoder: Show-Attend-Tell or the Transformer decoder.

    Args:
        encoder: image encoder producing ``[B, L, D]``.
        decoder: attention decoder over those annotations (:class:`AttentionDecoder` or
            :class:`TransformerDecoder`; anything with the decoder protocol).
        config: the settings it was built from (``{"architecture", "encoder", "decoder",
            "transformer"}``; a loaded model keeps its bundle's whole train config).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: AttentionDecoder | TransformerDecoder,
        config: Mapping[str, Any],
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.config = copy.deepcopy(dict(config))
        #: The vocabulary (``{"itos": [...], ...}``) of a loaded model; None before training.
        self.vocabulary: dict[str, Any] | None = None
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

    @property
    def image_size(self) -> int:
        """Side S that images are resized to before :meth:`encode` (``preprocess_images``)."""
        return self.encoder.image_size

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
            ``(logits [B, T, V], alphas)``: ``[B, T, L]`` for Show-Attend-Tell; for the
            Transformer the selected cross-attention maps (``train.transformer.ica_layers`` /
            ``ica_heads``) ``[B, T, H', L]``, the protocol's multi-head layout and the maps its
            ``step`` returns.
        """
        if inputs is None:
            raise ValueError("Captioner.forward needs the decoder inputs [B, T]")
        if features is None:
            if images is None:
                raise ValueError("Captioner.forward needs images or features")
            features = self.encode(images)
        if image_inv is not None:
            features = features[image_inv]  # [U, L, D] -> [B, L, D]
        logits, attention = self.decoder(features, inputs)
        if attention.dim() == 5:  # Transformer: [B, Λ, H, T, L] -> its selection [B, T, H', L]
            attention = self.decoder.protocol_attention(attention)
        return logits, attention


def build_captioner(config: ModelParams | Params | Mapping[str, Any], vocab_size: int) -> Captioner:
    """Build a captioner from its settings.

    Args:
        config: :class:`ModelParams`, or anything with its ``architecture``, ``encoder``,
            ``decoder`` and ``transformer`` sections (``TrainParams``, a bundle's config).
        vocab_size: V.

    Returns:
        The captioner (encoder weights loaded as ``encoder.weights`` says) with the decoder
        ``architecture`` names: :class:`AttentionDecoder` (``sat``, settings ``decoder``) or
        :class:`TransformerDecoder` (``transformer``, settings ``transformer``; its ``step``
        returns the maps ``ica_layers`` / ``ica_heads`` select).
    """
    params = ModelParams.of(config)
    encoder = Encoder.from_params(params.encoder)
    if params.architecture == "transformer":
        tr = params.transformer
        decoder: AttentionDecoder | TransformerDecoder = TransformerDecoder(
            vocab_size=vocab_size,
            feature_dim=encoder.out_dim,
            d_model=tr.d_model,
            num_layers=tr.num_layers,
            num_heads=tr.num_heads,
            d_ff=tr.d_ff,
            dropout=tr.dropout,
            encoder_layers=tr.encoder_layers,
            grid_size=encoder.grid_size,
            max_len=tr.max_len,
            tie_embeddings=tr.tie_embeddings,
            attention_init_scale=tr.attention_init_scale,
            attention_layers=tr.ica_layers,
            attention_heads=tr.ica_heads,
        )
    else:
        dec = params.decoder
        decoder = AttentionDecoder(
            vocab_size=vocab_size,
            feature_dim=encoder.out_dim,
            embed_dim=dec.embed_dim,
            hidden_dim=dec.hidden_dim,
            attention_dim=dec.attention_dim,
            dropout=dec.dropout,
            attention_init_scale=dec.attention_init_scale,
        )
    return Captioner(encoder, decoder, params.to_dict())


def load_captioner(
    bundle: Mapping[str, Any] | str | os.PathLike, device: str | torch.device = "cpu"
) -> Captioner:
    """Rebuild a trained captioner from its bundle.

    Args:
        bundle: the ``{"state_dict", "config", "vocabulary"}`` dict saved by the ``train`` or
            ``transformer`` pipeline (``baseline.model``, ``ica.model``,
            ``transformer_baseline.model``, ``transformer_ica.model``), or a path to a pickle of
            it. ``config["architecture"]`` (``sat`` when absent) selects the decoder.
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
    params = ModelParams.of(bundle["config"])
    # The state dict carries the trained weights: never load (or download) the configured ones.
    params = params.model_copy(
        update={"encoder": params.encoder.model_copy(update={"weights": "none"})}
    )
    vocab_size = len(bundle["vocabulary"]["itos"])
    model = build_captioner(params, vocab_size)
    model.config = copy.deepcopy(dict(bundle["config"]))
    model.load_state_dict(bundle["state_dict"])
    model.vocabulary = bundle["vocabulary"]
    return model.to(device).eval()


def make_bundle(
    model: Captioner, config: Params | Mapping[str, Any], vocabulary: Mapping[str, Any]
) -> dict[str, Any]:
    """The saved form of a trained model: CPU state dict, full config and vocabulary.

    The config is stored as a plain dict, so a bundle loads without this package's classes.
    """
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    plain = config.to_dict() if isinstance(config, Params) else copy.deepcopy(dict(config))
    return {
        "state_dict": state,
        "config": plain,
        "vocabulary": copy.deepcopy(dict(vocabulary)),
    }
