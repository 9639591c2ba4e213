"""Image preprocessing shared by training, the feature cache and evaluation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ica_captioning.data.images import to_rgb

#: ImageNet channel statistics (torchvision backbones are trained with them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_images(
    images: Sequence[str | os.PathLike | Image.Image],
    image_size: int,
    root: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Load and normalise images exactly as training does.

    Images are converted to RGB, resized (bilinear) to ``image_size × image_size`` (the
    attention grid then covers the whole image, matching how pseudo-label masks are gridded
    over the full image), scaled to [0, 1] and ImageNet-normalised.

    Args:
        images: file paths (relative to ``root`` if given — ``images.file_path`` is relative to
            ``dataset.images_dir``) or PIL images.
        image_size: side length S (``train.encoder.image_size``; a model's ``image_size``).
        root: folder that relative paths are joined to.

    Returns:
        ``[B, 3, S, S]`` float32.

    Raises:
        OSError: an image file that cannot be read, with its path.
    """
    size = int(image_size)
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
