"""On-disk feature cache for a frozen encoder.

With a frozen encoder every epoch would recompute the same annotation vectors. The cache
encodes each image once into ``<dir>/features-<key>.npy`` (``[N, L, D]``, memory-mapped when
read) where ``key`` hashes the encoder settings (backbone, layer, grid, image size, init seed,
weights source incl. file size/mtime) and the image list (ids, paths, images folder). Any change
of either gives a new key, so a stale cache is never read. A file under the right name that is
unreadable or of the wrong shape or dtype (a truncated copy, a file of another version) is
encoded again, with a warning saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ica_captioning.model.encoder import encoder_cache_key
from ica_captioning.model.images import preprocess_images
from ica_captioning.params.train import EncoderParams

logger = logging.getLogger(__name__)


def cache_key(
    encoder_config: EncoderParams,
    image_ids: Sequence[int],
    paths: Sequence[str],
    images_dir: str | os.PathLike,
    dtype: str,
) -> str:
    """Hash of everything the cached features depend on.

    Args:
        encoder_config: ``train.encoder`` settings.
        image_ids: ``[N]`` image ids in cache-row order.
        paths: ``[N]`` file paths relative to ``images_dir``.
        images_dir: the images folder.
        dtype: storage dtype.

    Returns:
        A 20-hex-digit key.
    """
    h = hashlib.sha256()
    h.update(encoder_cache_key(encoder_config).encode())
    h.update(os.path.abspath(os.fspath(images_dir)).encode())
    h.update(dtype.encode())
    h.update(np.asarray(image_ids, dtype=np.int64).tobytes())
    h.update("\0".join(map(str, paths)).encode())
    return h.hexdigest()[:20]


def cache_problem(path: str | os.PathLike, shape: tuple[int | None, ...], dtype: str) -> str | None:
    """Why an existing cache file cannot be used, or None when it can.

    Args:
        path: the ``.npy`` file.
        shape: the expected ``(N, L, D)``; a ``None`` entry is not checked.
        dtype: the expected storage dtype.

    Returns:
        ``None`` or the reason (unreadable, truncated, wrong shape or dtype).
    """
    try:
        array = np.load(path, mmap_mode="r")  # reads the header; maps the data lazily
    except Exception as err:  # noqa: BLE001 - any failure to open it makes it unusable
        return f"unreadable or truncated ({type(err).__name__}: {err})"
    try:
        found = tuple(int(n) for n in array.shape)
        if len(found) != len(shape) or any(
            want is not None and got != want for got, want in zip(found, shape)
        ):
            expected = tuple("?" if n is None else n for n in shape)
            return f"of shape {found}, expected {expected}"
        if array.dtype != np.dtype(dtype):
            return f"of dtype {array.dtype}, expected {dtype}"
    finally:
        del array
    return None


class CachedSource:
    """Feature source reading rows of a cache file (opened lazily: picklable for workers/DDP).

    Args:
        path: the ``.npy`` cache file ``[N, L, D]``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_array": None}

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped ``[N, L, D]`` array."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows ``[U]`` (sorted) → features ``[U, L, D]`` float32."""
        return torch.from_numpy(np.asarray(self.array[rows.numpy()], dtype=np.float32))


@torch.no_grad()
def build_feature_cache(
    encoder: torch.nn.Module,
    encoder_config: EncoderParams,
    image_ids: Sequence[int],
    paths: Sequence[str],
    images_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    *,
    dtype: str,
    batch_size: int,
    device: str | torch.device,
) -> CachedSource:
    """Return the cache for these images, encoding them first if no valid cache exists.

    Args:
        encoder: the (frozen) encoder ``[B, 3, H, W] → [B, L, D]``.
        encoder_config: its settings (for the key and the image size).
        image_ids: ``[N]`` image ids in row order.
        paths: ``[N]`` paths relative to ``images_dir``.
        images_dir: images folder.
        cache_dir: where cache files live.
        dtype: ``float16`` (half the disk, ample precision for decoder inputs) or ``float32``.
        batch_size: images per encoder batch.
        device: where to run the encoder.

    Returns:
        A :class:`CachedSource` over the ``[N, L, D]`` file.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"train.feature_cache.dtype must be float16 or float32, got {dtype!r}")
    key = cache_key(encoder_config, image_ids, paths, images_dir, dtype)
    cache_dir = Path(cache_dir)
    path = cache_dir / f"features-{key}.npy"
    if path.exists():
        cells = encoder_config.grid_size**2
        problem = cache_problem(path, (len(paths), cells, getattr(encoder, "out_dim", None)), dtype)
        if problem is None:
            logger.info("Using feature cache %s", path)
            return CachedSource(path)
        logger.warning("Feature cache %s is %s: encoding the images again", path, problem)
    cache_dir.mkdir(parents=True, exist_ok=True)
    was_training = encoder.training
    encoder.eval().to(device)
    tmp = cache_dir / f".features-{key}.{os.getpid()}.tmp.npy"
    out = None
    start = time.perf_counter()
    try:
        bar = tqdm(total=len(paths), desc="encoding images", unit="img", leave=False)
        for lo in range(0, len(paths), batch_size):
            images = preprocess_images(
                paths[lo : lo + batch_size], encoder_config.image_size, root=images_dir
            )
            feats = encoder(images.to(device)).float().cpu().numpy()  # [b, L, D]
            if out is None:
                shape = (len(paths), *feats.shape[1:])
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            out[lo : lo + len(feats)] = feats
            bar.update(len(feats))
        bar.close()
        if out is None:
            raise ValueError("feature cache requested for an empty image list")
        out.flush()
        del out
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
    finally:
        if tmp.exists():
            tmp.unlink()
        encoder.train(was_training)
    meta = {
        "key": key,
        "num_images": len(paths),
        "encoder": encoder_config.to_dict(),
        "dtype": dtype,
    }
    (cache_dir / f"features-{key}.json").write_text(json.dumps(meta, indent=1, default=str))
    logger.info(
        "Encoded %d images into %s in %.1f s", len(paths), path, time.perf_counter() - start
    )
    return CachedSource(path)
