"""Image encoder: a torchvision ResNet trunk pooled to the G×G attention grid.

The encoder turns normalised images ``[B, 3, H, W]`` into annotation vectors ``[B, L, D]``
(``L = G·G`` cells in row-major order, ``D`` = channels of the last kept block). The grid
must equal the one the pseudo-labels were reduced to (``matching.grid_size``), otherwise the
ICA loss would compare attention cells with the wrong mask cells.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
import torchvision
from torch import nn

from ica_captioning.params.train import EncoderParams

logger = logging.getLogger(__name__)

#: Blocks of a torchvision ResNet trunk, in order; ``layer`` names the last one kept.
RESNET_BLOCKS = ("layer1", "layer2", "layer3", "layer4")


def _is_none_weights(weights: Any) -> bool:
    return weights is None or (isinstance(weights, str) and weights.lower() in ("none", ""))


def weights_fingerprint(weights: Any) -> str:
    """Describe where encoder weights come from, for cache keys.

    Args:
        weights: ``none``, a torchvision weights enum name, or a local file path.

    Returns:
        ``"none"``, ``"enum:<name>"`` or ``"file:<path>:<size>:<mtime_ns>"`` (so an edited weights
        file invalidates the feature cache).
    """
    if _is_none_weights(weights):
        return "none"
    path = os.fspath(weights)
    if os.path.isfile(path):
        stat = os.stat(path)
        return f"file:{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"enum:{weights}"


def _load_weights(trunk: nn.Module, backbone: str, weights: Any, kept: tuple[str, ...]) -> None:
    """Load ``weights`` (enum name or local file) into the full torchvision ``trunk`` in place.

    A local file must hold every tensor of the kept modules (``conv1``, ``bn1`` and the ``kept``
    blocks); the blocks the encoder drops may be absent (a pretrained trunk saves only its own).
    """
    path = os.fspath(weights)
    if os.path.isfile(path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ValueError(f"encoder weights file {path!r} does not hold a state dict")
        # Accept state dicts saved from the whole classifier or from our trunk (``trunk.`` prefix).
        state = {k.removeprefix("module.").removeprefix("trunk."): v for k, v in state.items()}
        modules = ("conv1", "bn1", *kept)
        own = {k: v for k, v in trunk.state_dict().items() if k.split(".")[0] in modules}
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(
                f"encoder weights file {path!r} lacks {len(missing)} tensors of {backbone} "
                f"(e.g. {missing[:3]}); is it a {backbone} state dict?"
            )
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(
                f"encoder weights file {path!r} has wrong shapes for {bad[:3]} "
                f"(expected {backbone})"
            )
        trunk.load_state_dict({k: state[k] for k in own}, strict=False)
        logger.info("Loaded %s encoder weights from %s", backbone, path)
        return
    if os.sep in path or path.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"encoder weights file {path!r} does not exist")
    try:
        enum = torchvision.models.get_model_weights(backbone)[path]
    except KeyError as err:
        raise ValueError(
            f"unknown weights {path!r} for {backbone}: use 'none', a local state-dict file, or one "
            f"of {[w.name for w in torchvision.models.get_model_weights(backbone)] + ['DEFAULT']}"
        ) from err
    # Downloads into the torch hub cache on machines with network access (only when configured).
    trunk.load_state_dict(enum.get_state_dict(progress=False))
    logger.info("Loaded %s encoder weights %s", backbone, enum)


class Encoder(nn.Module):
    """ResNet trunk up to ``layer``, adaptive-average-pooled to ``grid_size × grid_size``.

    Args:
        backbone: torchvision ResNet-family model name (``resnet18``, ``resnet101``, ...).
        weights: ``none`` (random init, seeded by ``init_seed``), a torchvision weights enum name
            (``IMAGENET1K_V1``, ``DEFAULT``) or a local state-dict file.
        layer: last trunk block kept (``layer1`` .. ``layer4``); shallower blocks keep more spatial
            resolution (``layer2`` of a ResNet is stride 8: 16×16 cells at 128 px).
        grid_size: G of the output grid (``L = G²``).
        fine_tune_blocks: how many of the upper kept blocks are trained (0 = frozen encoder;
            a value ≥ the number of kept blocks also trains the stem).
        init_seed: seed of the random initialisation (matters for ``weights: none``).
        image_size: input side length the preprocessing resizes to (kept for the config).
    """

    def __init__(
        self,
        *,
        backbone: str,
        weights: Any,
        layer: str,
        grid_size: int,
        fine_tune_blocks: int,
        init_seed: int,
        image_size: int,
    ) -> None:
        super().__init__()
        if layer not in RESNET_BLOCKS:
            raise ValueError(f"train.encoder.layer must be one of {RESNET_BLOCKS}, got {layer!r}")
        if int(grid_size) < 1:
            raise ValueError(f"train.encoder.grid_size must be ≥ 1, got {grid_size}")
        try:
            builder = torchvision.models.get_model_builder(backbone)
        except ValueError as err:
            raise ValueError(f"unknown torchvision backbone {backbone!r}") from err
        # Seeded construction makes 'weights: none' encoders (and hence feature caches)
        # reproducible without touching the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(init_seed))
            full = builder(weights=None)
        if not all(hasattr(full, name) for name in ("conv1", "bn1", *RESNET_BLOCKS)):
            raise ValueError(f"backbone {backbone!r} is not a ResNet-family model")
        keep = RESNET_BLOCKS[: RESNET_BLOCKS.index(layer) + 1]
        if not _is_none_weights(weights):
            _load_weights(full, backbone, weights, keep)
        self.stem = nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool)
        self.blocks = nn.ModuleList(getattr(full, name) for name in keep)
        self.pool = nn.AdaptiveAvgPool2d((int(grid_size), int(grid_size)))
        self.grid_size = int(grid_size)
        self.out_dim = self._probe_dim()
        self.fine_tune_blocks = int(fine_tune_blocks)
        self.set_fine_tuning(self.fine_tune_blocks)
        self.image_size = int(image_size)
        # BatchNorm frozen from the start, not only after the first .train()/.eval() call: the
        # standardisation statistics of a fine-tuned encoder are fitted before that call.
        self.train(self.training)

    def _probe_dim(self) -> int:
        last = self.blocks[-1][-1]
        # BasicBlock ends with bn2, Bottleneck with bn3: their channel count is the output dim.
        bn = getattr(last, "bn3", None) or last.bn2
        return int(bn.num_features)

    @property
    def frozen(self) -> bool:
        """Whether no encoder parameter is trained (features can then be cached)."""
        return self.fine_tune_blocks <= 0

    def set_fine_tuning(self, blocks: int) -> None:
        """Train only the upper ``blocks`` kept blocks (0 freezes the whole encoder)."""
        for p in self.parameters():
            p.requires_grad_(False)
        modules = [self.stem, *self.blocks]
        for module in modules[len(modules) - max(0, int(blocks)) :] if blocks > 0 else []:
            for p in module.parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> Encoder:
        """Switch mode, but keep BatchNorm in eval mode.

        Captioning batches are small and (under DDP) split across processes; frozen BatchNorm
        statistics keep the encoder identical across ranks and batch sizes.
        """
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            images: ``[B, 3, H, W]`` float, ImageNet-normalised.

        Returns:
            Annotation vectors ``[B, L, D]`` with ``L = G²`` (row-major cells).
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder expects images [B, 3, H, W], got {tuple(images.shape)}")
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        x = self.pool(x)  # [B, D, G, G]
        return x.flatten(2).transpose(1, 2).contiguous()  # [B, G*G, D]

    @classmethod
    def from_params(cls, params: EncoderParams) -> Encoder:
        """The encoder that ``train.encoder`` describes (weights loaded as it says)."""
        return cls(
            backbone=params.backbone,
            weights=params.weights,
            layer=params.layer,
            grid_size=params.grid_size,
            fine_tune_blocks=params.fine_tune_blocks,
            init_seed=params.init_seed,
            image_size=params.image_size,
        )


def encoder_cache_key(params: EncoderParams) -> str:
    """Stable short hash of the settings that determine encoder outputs."""
    parts = [
        str(getattr(params, k))
        for k in ("backbone", "layer", "grid_size", "image_size", "init_seed")
    ]
    parts.append(weights_fingerprint(params.weights))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
