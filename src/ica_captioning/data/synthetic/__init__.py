"""The embedded dataset: a small, deterministic captioning world in the real file formats.

Each image shows 1-4 flat-coloured shapes (nine COCO-style classes, see ``CLASSES``) on a
textured, noisy grey background, with sizes, positions, repeated objects (plurals: "two red
circles") and occlusion, behind them small distractor shapes that no caption mentions (some of
them look-alikes of a mentioned object in another colour). ``SceneSettings`` holds the knobs.
Every image gets several varied captions (templates, synonyms, word order, spatial relations,
partial mentions), so the word -> object alignment is learnable but not trivial.

Written as the real datasets are:

* ``dataset_synthetic.json`` - Karpathy split JSON (``images[].filename/filepath/split/imgid/
  cocoid/sentences[].tokens/raw/sentid/imgid/sentids``);
* ``annotations/captions_{train,val,test}.json`` - COCO captions;
* ``annotations/instances_{train,val,test}.json`` - COCO instances with category names and one
  segmentation per object: compressed RLE of the *visible* (post-occlusion) pixels, or, for a
  fraction of unoccluded polygonal objects, a polygon (as real COCO has both);
* ``images/<cocoid>.png`` - the images (drawn without anti-aliasing, so every object pixel has
  exactly the object's colour and the masks are exact);
* ``generator.json`` - the generator's parameters and a fingerprint of its source code (every
  module of this package and the tokeniser), used to tell whether the files on disk are up to
  date (a changed generator regenerates them).

Everything derives from ``numpy.random.default_rng([seed, image_index])``, so the same parameters
give byte-identical annotation files (and images, for a given Pillow version), whatever the
number of worker processes.

Modules:

* :mod:`~ica_captioning.data.synthetic.world` - classes, colours, sizes; ``Scene`` records;
* :mod:`~ica_captioning.data.synthetic.shapes` - rasterising one shape (mask, COCO polygon);
* :mod:`~ica_captioning.data.synthetic.captions` - caption wording;
* :mod:`~ica_captioning.data.synthetic.scenes` - object sampling and layout, ``render_scene``;
* :mod:`~ica_captioning.data.synthetic.manifest` - file layout, ``generator_config``, the source
  fingerprint and ``is_up_to_date``;
* :mod:`~ica_captioning.data.synthetic.writer` - ``generate_dataset``: images, Karpathy and COCO
  JSON, ``generator.json``.
"""

from ica_captioning.data.synthetic.captions import NUMBER_WORDS, SIZE_WORDS, make_captions
from ica_captioning.data.synthetic.manifest import (
    ANNOTATIONS_SUBDIR,
    GENERATOR_SOURCE,
    IMAGES_SUBDIR,
    KARPATHY_FILE,
    MANIFEST_FILE,
    SPLITS,
    dataset_files,
    generator_config,
    is_up_to_date,
)
from ica_captioning.data.synthetic.scenes import render_scene
from ica_captioning.data.synthetic.shapes import POLYGON_SHAPES, draw_shape_mask
from ica_captioning.data.synthetic.world import (
    CATEGORY_IDS,
    CLASS_NAMES,
    CLASSES,
    COLOUR_NAMES,
    COLOURS,
    SIZE_NAMES,
    Scene,
    SceneObject,
    SceneSettings,
    ShapeClass,
)
from ica_captioning.data.synthetic.writer import generate_dataset

__all__ = [
    "ANNOTATIONS_SUBDIR",
    "CATEGORY_IDS",
    "CLASSES",
    "CLASS_NAMES",
    "COLOURS",
    "COLOUR_NAMES",
    "GENERATOR_SOURCE",
    "IMAGES_SUBDIR",
    "KARPATHY_FILE",
    "MANIFEST_FILE",
    "NUMBER_WORDS",
    "POLYGON_SHAPES",
    "SIZE_NAMES",
    "SIZE_WORDS",
    "SPLITS",
    "Scene",
    "SceneObject",
    "SceneSettings",
    "ShapeClass",
    "dataset_files",
    "draw_shape_mask",
    "generate_dataset",
    "generator_config",
    "is_up_to_date",
    "make_captions",
    "render_scene",
]
