"""Ingestion nodes: thin wrappers around :mod:`ica_captioning.data`.

Paths come from ``params:dataset`` (``name``, ``format``, ``annotations``, ``images_dir``) and are
relative to the working directory (the project root for ``kedro run``). Each node parses its
parameter sections once (:mod:`ica_captioning.params`) and passes typed values on; every value
comes from conf/base/parameters*.yml.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from ica_captioning.data.images import validate_images as _validate_images
from ica_captioning.data.readers import coco_annotation_files, read_coco_captions, read_karpathy
from ica_captioning.data.synthetic import generate_dataset, generator_config, is_up_to_date
from ica_captioning.data.tables import AnnotationError, check_ceiling, quarantine_frame
from ica_captioning.data.text import Vocabulary
from ica_captioning.data.text import build_vocabulary as _build_vocabulary
from ica_captioning.data.text import encode_captions as _encode_captions
from ica_captioning.params import DatasetParams, IngestionParams
from ica_captioning.params.ingestion import SyntheticParams

logger = logging.getLogger(__name__)

#: Annotation formats (``dataset.format``), as the parameter schema declares them.
FORMATS: tuple[str, ...] = get_args(DatasetParams.model_fields["format"].annotation)


def prepare_raw_dataset(
    dataset: Mapping[str, Any], synthetic: Mapping[str, Any], seed: int
) -> dict[str, Any]:
    """Generate the embedded dataset when ``dataset.name`` is ``synthetic`` and it is not there.

    Args:
        dataset: ``params:dataset``.
        synthetic: ``params:ingestion.synthetic`` (generator parameters; ``seed: null`` uses
            the project ``seed``).
        seed: ``params:seed``.

    Returns:
        The ``raw_dataset`` manifest: dataset name, whether files were generated now, and the
        generator configuration for the synthetic set.

    Raises:
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    data = DatasetParams.parse(dataset, "dataset")
    if data.name != "synthetic":
        return {"name": data.name, "generated": False, "generator": None}
    generator = SyntheticParams.parse(synthetic, "ingestion.synthetic")
    out_dir = Path(data.images_dir)
    # num_workers changes how fast the files are made, not what they hold: not in the config.
    options = generator.to_dict()
    num_workers = options.pop("num_workers")
    if options["seed"] is None:
        options["seed"] = seed
    config = generator_config(**options)
    generated = False
    if is_up_to_date(out_dir, config):
        logger.info("Synthetic dataset in %s is up to date; not regenerating", out_dir)
    else:
        generate_dataset(out_dir, **options, num_workers=num_workers, progress=True)
        generated = True
    return {"name": data.name, "generated": generated, "generator": config}


def read_annotations(
    raw_dataset: Mapping[str, Any], dataset: Mapping[str, Any], ingestion: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read the caption annotations selected by ``dataset.format``.

    Args:
        raw_dataset: the ``raw_dataset`` manifest (orders this node after generation).
        dataset: ``params:dataset``.
        ingestion: ``params:ingestion``.

    Returns:
        ``raw_images`` (not yet validated), ``raw_captions``, ``annotation_quarantine``.

    Raises:
        AnnotationError: unusable file, or a bad record with ``on_bad_annotation: raise``.
        DataQualityError: more bad records than ``ingestion.max_bad_fraction``.
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    data = DatasetParams.parse(dataset, "dataset")
    params = IngestionParams.parse(ingestion, "ingestion")
    fmt = data.format
    on_bad = params.on_bad_annotation
    if fmt == "karpathy":
        annotations = data.annotations
        if not isinstance(annotations, str):
            raise AnnotationError(
                f"dataset.annotations must be one Karpathy JSON file, got {annotations!r}"
            )
        images, captions, quarantine, counts = read_karpathy(
            annotations, restval_split=params.restval_split, on_bad=on_bad
        )
    elif fmt == "coco":
        files = coco_annotation_files(data.annotations)
        images, captions, quarantine, counts = read_coco_captions(
            files, image_subdirs=params.coco_image_subdirs, on_bad=on_bad
        )
    else:  # the schema admits only FORMATS; this guards a params object built without checks
        raise ValueError(f"dataset.format must be one of {FORMATS}, got {fmt!r}")
    logger.info(
        "Read %d images and %d captions (%s format, %s); %d annotation records quarantined",
        len(images),
        len(captions),
        fmt,
        raw_dataset.get("name"),
        len(quarantine),
    )
    if images.empty:
        raise AnnotationError(f"{data.annotations}: no usable image records")
    ceiling = params.max_bad_fraction
    examples = [f"{r.file} {r.record}: {r.reason}" for r in quarantine.itertuples()]
    check_ceiling(counts["bad_images"], counts["images"], ceiling, "image records", examples)
    check_ceiling(counts["bad_captions"], counts["captions"], ceiling, "caption records", examples)
    return images, captions, quarantine


def validate_images(
    raw_images: pd.DataFrame, dataset: Mapping[str, Any], ingestion: Mapping[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Open and check every image; see :func:`ica_captioning.data.images.validate_images`.

    Args:
        raw_images: the ``raw_images`` table from :func:`read_annotations`.
        dataset: ``params:dataset`` (``images_dir``).
        ingestion: ``params:ingestion`` (``validation``, ``max_bad_fraction``).

    Returns:
        ``images`` (usable, with sizes and ``status``) and ``image_quarantine``.

    Raises:
        DataQualityError: more bad images than ``ingestion.max_bad_fraction``.
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    data = DatasetParams.parse(dataset, "dataset")
    params = IngestionParams.parse(ingestion, "ingestion")
    return _validate_images(
        raw_images,
        data.images_dir,
        num_workers=params.validation.num_workers,
        max_bad_fraction=params.max_bad_fraction,
        check_size=params.validation.check_size,
        progress=params.validation.progress,
    )


def select_captions(raw_captions: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """The ``captions`` of the usable images (quarantined images' rows say why the rest went)."""
    keep = raw_captions["image_id"].isin(images["image_id"])
    dropped = int((~keep).sum())
    if dropped:
        logger.info("Left out %d captions of quarantined images", dropped)
    return raw_captions.loc[keep].reset_index(drop=True)


def merge_quarantine(
    annotation_quarantine: pd.DataFrame, image_quarantine: pd.DataFrame
) -> pd.DataFrame:
    """The ``quarantine`` table: bad annotation records, then bad images."""
    frames = [f for f in (annotation_quarantine, image_quarantine) if not f.empty]
    if not frames:
        return quarantine_frame()
    return quarantine_frame(pd.concat(frames, ignore_index=True).to_dict("records"))


def build_vocabulary(captions: pd.DataFrame, ingestion: Mapping[str, Any]) -> dict[str, Any]:
    """The ``vocabulary`` from the train captions (``min_word_freq``, ``max_caption_len``).

    Raises:
        AnnotationError: there are no train captions.
        ParameterError: a parameter is missing, unknown or of the wrong type.
    """
    params = IngestionParams.parse(ingestion, "ingestion")
    train = captions.loc[captions["split"] == "train", "tokens"]
    if train.empty:
        raise AnnotationError("no train captions: cannot build the vocabulary")
    vocabulary = _build_vocabulary(
        train, min_freq=params.min_word_freq, max_len=params.max_caption_len
    )
    logger.info("Vocabulary: %d words (min_freq=%d)", len(vocabulary), vocabulary.min_freq)
    return vocabulary.to_json()


def encode_captions(captions: pd.DataFrame, vocabulary: Mapping[str, Any]) -> pd.DataFrame:
    """The ``encoded_captions`` table."""
    return _encode_captions(captions, Vocabulary.from_json(vocabulary))
