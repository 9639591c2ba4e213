"""The ``detectron2`` backend: a model-zoo Mask R-CNN, batched through ``build_model``.

detectron2 is not on the package index, so it is imported lazily: selecting this backend without
it installed fails at once with the install command, and an installed detectron2 that fails to
import fails with the original error and its likely fix. Images go through the model in batches
(``build_model`` + ``DetectionCheckpointer``, not one image at a time via ``DefaultPredictor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ica_captioning.detection.base import (
    INSTALL_DETECTRON2,
    SETUPTOOLS_FOR_DETECTRON2,
    DetectionConfigError,
    DetectorBackend,
    ImageDetections,
    ImageRecord,
)
from ica_captioning.detection.images import read_detection_image
from ica_captioning.detection.rle import encode_masks
from ica_captioning.params import DetectionParams


class Detectron2Unavailable(ImportError):
    """detectron2 cannot be used: not installed (the message holds the install command)."""


class Detectron2ImportFailed(Detectron2Unavailable):
    """detectron2 is installed but importing it fails (the message holds the likely fix)."""


def _import_fix(err: ImportError) -> str:
    """The likely fix for an installed detectron2 that fails to import with ``err``."""
    text = f"{err.name or ''} {err}"
    if "pkg_resources" in text:
        return f"setuptools ≥ 81 removed pkg_resources: {SETUPTOOLS_FOR_DETECTRON2}"
    if any(k in text for k in ("detectron2._C", "name '_C'", "undefined symbol")):
        return (
            "its compiled extension (detectron2._C) is missing or was built against another "
            f"torch; rebuild it with the installed torch: {INSTALL_DETECTRON2}"
        )
    return f"a broken or partial install; reinstall it: {INSTALL_DETECTRON2}"


def import_detectron2() -> dict[str, Any]:
    """Import the detectron2 pieces this backend uses.

    Raises:
        Detectron2Unavailable: detectron2 is not installed (the message gives the install
            command).
        Detectron2ImportFailed: detectron2 is installed but importing it fails (the message gives
            the original error and its likely fix, e.g. ``setuptools<81`` for
            ``pkg_resources``).
    """
    try:
        import detectron2.data.transforms as transforms
        from detectron2 import model_zoo
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.config import get_cfg
        from detectron2.data import MetadataCatalog
        from detectron2.modeling import build_model
    except ImportError as err:
        # Only detectron2 itself missing means "not installed"; a module missing inside it
        # (pkg_resources, detectron2._C, ...) means an install that does not import.
        if isinstance(err, ModuleNotFoundError) and err.name == "detectron2":
            raise Detectron2Unavailable(
                "detection.backend=detectron2: detectron2 is not installed (it is not on the "
                f"package index). Install it with:\n    {INSTALL_DETECTRON2}\n"
                "or choose detection.backend=torchvision / annotations."
            ) from err
        raise Detectron2ImportFailed(
            "detection.backend=detectron2: detectron2 is installed but failed to import: "
            f"{type(err).__name__}: {err}; probably {_import_fix(err)}"
        ) from err
    return {
        "T": transforms,
        "model_zoo": model_zoo,
        "DetectionCheckpointer": DetectionCheckpointer,
        "get_cfg": get_cfg,
        "MetadataCatalog": MetadataCatalog,
        "build_model": build_model,
    }


class Detectron2Backend(DetectorBackend):
    """Mask R-CNN from the detectron2 model zoo.

    Args:
        weights: local weights file (``.pkl`` / ``.pth``); ``None`` uses the model zoo's URL
            (downloads, on machines that can).
        config: model-zoo config name, or a local config ``.yaml``.
        device: ``cpu`` / ``cuda`` (``MODEL.DEVICE``).
        score_threshold: ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.
        max_detections: ``TEST.DETECTIONS_PER_IMAGE``.
        batch_size: images per forward pass.
        categories: class names (index = predicted class); ``None`` = the COCO metadata of the
            config's training set.

    Every setting is required: the values live in conf/base/parameters_detection.yml
    (:meth:`from_params` reads them from there).
    """

    name = "detectron2"

    def __init__(
        self,
        weights: str | Path | None,
        *,
        config: str,
        device: str,
        score_threshold: float,
        max_detections: int,
        batch_size: int,
        categories: Sequence[str] | None,
    ) -> None:
        d2 = import_detectron2()  # first, so a missing install fails before anything else
        import torch

        self._torch = torch
        self.batch_size = int(batch_size)
        self.score_threshold = float(score_threshold)
        cfg = d2["get_cfg"]()
        if Path(config).is_file():
            cfg.merge_from_file(str(config))
        else:
            try:
                cfg.merge_from_file(d2["model_zoo"].get_config_file(config))
            except RuntimeError as err:
                raise DetectionConfigError(
                    f"detection.detectron2.config={config!r} is neither a file nor a model-zoo "
                    f"config: {err}"
                ) from err
        if weights:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"detection.weights file {weights} does not exist")
            cfg.MODEL.WEIGHTS = str(weights)
        else:
            cfg.MODEL.WEIGHTS = d2["model_zoo"].get_checkpoint_url(config)
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise DetectionConfigError(
                f"detection.device={device!r} but CUDA is not available; use detection.device=cpu"
            )
        cfg.MODEL.DEVICE = str(device)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = self.score_threshold
        cfg.TEST.DETECTIONS_PER_IMAGE = int(max_detections)
        cfg.freeze()
        self.cfg = cfg
        self.config = str(config)
        self.weights = str(cfg.MODEL.WEIGHTS)
        self.net = d2["build_model"](cfg)
        self.net.eval()
        d2["DetectionCheckpointer"](self.net).load(cfg.MODEL.WEIGHTS)
        # The same test-time resize DefaultPredictor applies, but run over a whole batch.
        self.resize = d2["T"].ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if categories:
            self.categories = list(categories)
        else:
            dataset = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "coco_2017_train"
            self.categories = list(d2["MetadataCatalog"].get(dataset).thing_classes)
        if len(self.categories) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise DetectionConfigError(
                f"{len(self.categories)} class names for a model with "
                f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES} classes; set detection.detectron2.categories"
            )

    @classmethod
    def from_params(cls, detection: DetectionParams) -> Detectron2Backend:
        """The backend ``params:detection`` describes (``detection.detectron2`` and shared keys).

        Args:
            detection: the parsed ``params:detection``.

        Raises:
            Detectron2Unavailable: detectron2 is not installed.
        """
        d2 = detection.detectron2
        return cls(
            detection.weights,
            config=d2.config,
            device=detection.device,
            score_threshold=detection.score_threshold,
            max_detections=detection.max_detections,
            batch_size=detection.batch_size,
            categories=d2.categories,
        )

    def fingerprint(self) -> dict[str, Any]:
        """Config, weights, thresholds."""
        return {
            "backend": self.name,
            "config": self.config,
            "weights": self.weights,
            "score_threshold": self.score_threshold,
            "max_detections": int(self.cfg.TEST.DETECTIONS_PER_IMAGE),
            "categories": self.categories,
        }

    def detect(
        self, records: Sequence[ImageRecord]
    ) -> tuple[list[ImageDetections], list[dict[str, Any]]]:
        """Run the model on the decodable images of a batch."""
        torch = self._torch
        quarantine: list[dict[str, Any]] = []
        kept: list[ImageRecord] = []
        inputs: list[dict[str, Any]] = []
        for rec in records:
            pixels, bad = read_detection_image(rec)
            if bad is not None:
                quarantine.append(bad)
                continue
            if self.input_format == "BGR":
                pixels = pixels[:, :, ::-1]
            resized = self.resize.get_transform(pixels).apply_image(pixels)  # [h, w, 3]
            tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
            # height/width ask the model to paste masks back at the original image size.
            inputs.append({"image": tensor, "height": rec.height, "width": rec.width})
            kept.append(rec)
        if not kept:
            return [], quarantine
        with torch.inference_mode():
            outputs = self.net(inputs)
        results = []
        for rec, out in zip(kept, outputs):
            inst = out["instances"].to("cpu")
            masks = inst.pred_masks.numpy().astype(bool)  # [N, H, W]
            results.append(
                ImageDetections(
                    image_id=rec.image_id,
                    height=rec.height,
                    width=rec.width,
                    class_names=[self.categories[int(c)] for c in inst.pred_classes.tolist()],
                    scores=inst.scores.numpy(),
                    boxes=inst.pred_boxes.tensor.numpy(),
                    rle_counts=encode_masks(masks.reshape(-1, rec.height, rec.width)),
                )
            )
        return results, quarantine
