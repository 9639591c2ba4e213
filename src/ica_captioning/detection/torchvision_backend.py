"""The ``torchvision`` backend: Mask R-CNN (``maskrcnn_resnet50_fpn`` / ``_v2``), batched.

Weights come from a local file (``detection.weights``: a ``state_dict``, or a training
checkpoint holding one under ``"model"`` / ``"state_dict"``), or from a torchvision weights enum
name (``DEFAULT``, ``COCO_V1``) on machines that can download. Label ids map to class names
through the weights' category list; for a local file the COCO list of
``MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"]`` (no download needed) unless
``categories`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection import (
    MaskRCNN,
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d

from ica_captioning.detection.base import (
    DetectionConfigError,
    DetectorBackend,
    ImageDetections,
    ImageRecord,
)
from ica_captioning.detection.images import read_detection_image
from ica_captioning.detection.rle import encode_masks
from ica_captioning.params import DetectionParams

logger = logging.getLogger(__name__)

ARCHITECTURES = {
    "maskrcnn_resnet50_fpn": MaskRCNN_ResNet50_FPN_Weights,
    "maskrcnn_resnet50_fpn_v2": MaskRCNN_ResNet50_FPN_V2_Weights,
}
#: torchvision marks unused COCO ids with this placeholder name.
PLACEHOLDER = "N/A"


def coco_categories() -> list[str]:
    """The 91-entry COCO label list of torchvision's detection weights (index = label id)."""
    return list(MaskRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"])


def resolve_device(device: str) -> torch.device:
    """Check a device string (``cpu``, ``cuda``, ``cuda:1``) is usable here.

    Raises:
        DetectionConfigError: CUDA requested but not available.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DetectionConfigError(
            f"detection.device={device!r} but CUDA is not available on this machine; "
            "use detection.device=cpu"
        )
    return dev


def build_maskrcnn(arch: str, num_classes: int, **kwargs: Any) -> MaskRCNN:
    """Build an untrained Mask R-CNN with the same module layout as torchvision's weights.

    The v1 COCO weights were trained with frozen batch norm in the backbone, so v1 is built with
    ``FrozenBatchNorm2d`` (a plain ``weights=None`` build would use ``BatchNorm2d``); v2 uses
    ``BatchNorm2d`` either way.

    Args:
        arch: ``maskrcnn_resnet50_fpn`` or ``maskrcnn_resnet50_fpn_v2``.
        num_classes: number of labels including background.
        **kwargs: ``MaskRCNN`` options (``min_size``, ``box_score_thresh``, ...).
    """
    if arch == "maskrcnn_resnet50_fpn":
        backbone = resnet_fpn_backbone(
            backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d, trainable_layers=3
        )
        return MaskRCNN(backbone, num_classes=num_classes, **kwargs)
    if arch == "maskrcnn_resnet50_fpn_v2":
        return maskrcnn_resnet50_fpn_v2(
            weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
        )
    raise DetectionConfigError(
        f"detection.torchvision.model={arch!r} is not one of {sorted(ARCHITECTURES)}"
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local weights file: a state dict or a checkpoint that holds one.

    Raises:
        FileNotFoundError: no such file.
        DetectionConfigError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detection.weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/unsafe files
        raise DetectionConfigError(f"cannot read weights file {path}: {err}") from err
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DetectionConfigError(f"weights file {path} does not hold a state dict of tensors")
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    return {k.removeprefix("module."): v for k, v in obj.items()}


class TorchvisionBackend(DetectorBackend):
    """Mask R-CNN from torchvision, run on batches of images.

    Args:
        weights: local weights file, or a weights enum name (``DEFAULT``, ``COCO_V1``) to
            download.
        model: ``maskrcnn_resnet50_fpn`` or ``maskrcnn_resnet50_fpn_v2``.
        device: ``cpu`` / ``cuda`` / ``cuda:N``.
        score_threshold: keep instances with score ``>=`` this.
        max_detections: most instances per image.
        mask_threshold: binarise the soft masks at this probability.
        batch_size: images per forward pass.
        min_size: shorter side the model resizes images to.
        max_size: cap on the longer side.
        categories: label names (index = label id) for a local file with other classes;
            ``None`` = the weights' (or torchvision's COCO) list.
        options: more ``MaskRCNN`` keyword arguments (e.g. ``rpn_post_nms_top_n_test``).

    Every setting is required: the values live in conf/base/parameters_detection.yml
    (:meth:`from_params` reads them from there).
    """

    name = "torchvision"

    def __init__(
        self,
        weights: str | Path | None,
        *,
        model: str,
        device: str,
        score_threshold: float,
        max_detections: int,
        mask_threshold: float,
        batch_size: int,
        min_size: int,
        max_size: int,
        categories: Sequence[str] | None,
        options: dict[str, Any] | None,
    ) -> None:
        if model not in ARCHITECTURES:
            raise DetectionConfigError(
                f"detection.torchvision.model={model!r} is not one of {sorted(ARCHITECTURES)}"
            )
        if weights is None or str(weights).strip() == "":
            raise DetectionConfigError(
                "detection.weights is not set: give a local Mask R-CNN weights file, or "
                "DEFAULT to download torchvision's COCO weights (needs network access)"
            )
        self.arch = model
        self.device = resolve_device(device)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)
        self.mask_threshold = float(mask_threshold)
        self.batch_size = int(batch_size)
        self.weights = str(weights)
        options = {
            "min_size": int(min_size),
            "max_size": int(max_size),
            "box_score_thresh": self.score_threshold,
            "box_detections_per_img": self.max_detections,
            **(options or {}),
        }
        self._options = options
        enum_cls = ARCHITECTURES[model]
        if Path(self.weights).is_file():
            state = load_state_dict_file(self.weights)
            key = "roi_heads.box_predictor.cls_score.weight"
            if key not in state:
                raise DetectionConfigError(
                    f"weights file {self.weights} is not a Mask R-CNN state dict (no '{key}')"
                )
            num_classes = int(state[key].shape[0])
            self.categories = list(categories) if categories else coco_categories()
            self.net = build_maskrcnn(model, num_classes, **options)
            try:
                self.net.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise DetectionConfigError(
                    f"weights file {self.weights} does not fit {model}: {err}"
                ) from err
        elif self.weights in enum_cls.__members__:
            enum = enum_cls[self.weights]
            self.categories = list(categories) if categories else list(enum.meta["categories"])
            builder = (
                maskrcnn_resnet50_fpn
                if model == "maskrcnn_resnet50_fpn"
                else (maskrcnn_resnet50_fpn_v2)
            )
            self.net = builder(weights=enum, **options)  # downloads on first use
            num_classes = len(enum.meta["categories"])
        else:
            raise FileNotFoundError(
                f"detection.weights={self.weights!r} is neither an existing file nor one of "
                f"{list(enum_cls.__members__)} (torchvision weights to download)"
            )
        if len(self.categories) != num_classes:
            raise DetectionConfigError(
                f"{len(self.categories)} category names for a model with {num_classes} labels; "
                "set detection.torchvision.categories to the model's label names"
            )
        self.net.eval().to(self.device)

    @classmethod
    def from_params(cls, detection: DetectionParams) -> TorchvisionBackend:
        """The backend ``params:detection`` describes (``detection.torchvision`` and shared keys).

        Args:
            detection: the parsed ``params:detection``.
        """
        tv = detection.torchvision
        return cls(
            detection.weights,
            model=tv.model,
            device=detection.device,
            score_threshold=detection.score_threshold,
            max_detections=detection.max_detections,
            mask_threshold=detection.mask_threshold,
            batch_size=detection.batch_size,
            min_size=tv.min_size,
            max_size=tv.max_size,
            categories=tv.categories,
            options=dict(tv.options),
        )

    def fingerprint(self) -> dict[str, Any]:
        """Model, weights and every option that changes the detections."""
        weights: dict[str, Any] = {"weights": self.weights}
        path = Path(self.weights)
        if path.is_file():
            weights |= {"size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
        return {
            "backend": self.name,
            "model": self.arch,
            **weights,
            **self._options,
            "mask_threshold": self.mask_threshold,
            "categories": self.categories,
        }

    @torch.inference_mode()
    def detect(
        self, records: Sequence[ImageRecord]
    ) -> tuple[list[ImageDetections], list[dict[str, Any]]]:
        """Run the model on the decodable images of a batch."""
        quarantine: list[dict[str, Any]] = []
        kept: list[ImageRecord] = []
        tensors: list[torch.Tensor] = []
        for rec in records:
            pixels, bad = read_detection_image(rec)
            if bad is not None:
                quarantine.append(bad)
                continue
            kept.append(rec)
            # [H, W, 3] uint8 -> [3, H, W] float in [0, 1]; the model normalises itself.
            tensors.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(255.0))
        if not kept:
            return [], quarantine
        outputs = self.net([t.to(self.device) for t in tensors])
        results = []
        for rec, out in zip(kept, outputs):
            keep = out["scores"] >= self.score_threshold
            labels = out["labels"][keep].cpu().numpy()
            names = [self.categories[int(i)] for i in labels]
            valid = np.array([n not in (PLACEHOLDER, "__background__") for n in names], dtype=bool)
            if not valid.all():
                # Only untrained weights predict unused COCO ids; say so instead of hiding it.
                logger.warning(
                    "image %s: dropped %d detections of placeholder categories",
                    rec.image_id,
                    int((~valid).sum()),
                )
            idx = torch.from_numpy(np.flatnonzero(valid)).to(out["scores"].device)
            scores = out["scores"][keep][idx].cpu().numpy()
            boxes = out["boxes"][keep][idx].cpu().numpy()
            masks = (out["masks"][keep][idx, 0] >= self.mask_threshold).cpu().numpy()  # [N, H, W]
            results.append(
                ImageDetections(
                    image_id=rec.image_id,
                    height=rec.height,
                    width=rec.width,
                    class_names=[n for n, v in zip(names, valid) if v],
                    scores=scores,
                    boxes=boxes,
                    rle_counts=encode_masks(masks.reshape(-1, rec.height, rec.width)),
                )
            )
        return results, quarantine
