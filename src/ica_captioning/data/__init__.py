"""Data: the embedded dataset generator, annotation readers, image validation and text.

Plain modules, importable without Kedro:

* :mod:`ica_captioning.data.synthetic` - ``generate_dataset`` / ``render_scene`` (embedded set);
* :mod:`ica_captioning.data.readers` - ``read_karpathy`` / ``read_coco_captions``;
* :mod:`ica_captioning.data.images` - ``validate_images`` / ``load_rgb`` (use it to load pixels);
* :mod:`ica_captioning.data.text` - ``tokenize`` / ``Vocabulary`` / ``encode_captions``;
* :mod:`ica_captioning.data.tables` - column layouts, quarantine rows, errors.
"""

from ica_captioning.data.images import load_rgb, validate_images
from ica_captioning.data.readers import read_coco_captions, read_karpathy
from ica_captioning.data.synthetic import CLASS_NAMES, CLASSES, generate_dataset, render_scene
from ica_captioning.data.tables import AnnotationError, DataQualityError
from ica_captioning.data.text import Vocabulary, build_vocabulary, encode_captions, tokenize

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "AnnotationError",
    "DataQualityError",
    "Vocabulary",
    "build_vocabulary",
    "encode_captions",
    "generate_dataset",
    "load_rgb",
    "read_coco_captions",
    "read_karpathy",
    "render_scene",
    "tokenize",
    "validate_images",
]
