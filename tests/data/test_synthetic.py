from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from project_conf import section
from pycocotools.coco import COCO

from ica_captioning.data import synthetic, text
from ica_captioning.data.synthetic import (
    COLOURS,
    MANIFEST_FILE,
    SceneSettings,
    dataset_files,
    generate_dataset,
    generator_config,
    is_up_to_date,
    render_scene,
)
from ica_captioning.data.synthetic.scenes import BACKGROUND_RANGE

#: The scene settings of conf/base.
SCENE_CONF = section("ingestion")["synthetic"]["scene"]
SCENE = SceneSettings.from_params(SCENE_CONF)

# The table of docs/contracts.md ("embedded dataset classes"), written out independently.
CONTRACT_CLASSES = {
    "circle": ("circles", {"disc", "disk"}),
    "square": ("squares", {"block"}),
    "triangle": ("triangles", set()),
    "star": ("stars", set()),
    "heart": ("hearts", set()),
    "cross": ("crosses", {"plus"}),
    "diamond": ("diamonds", {"rhombus"}),
    "ring": ("rings", {"hoop"}),
    "crescent moon": ("crescent moons", {"moon", "crescent"}),
}
SINGULAR = {}
PLURAL = {}
for _name, (_plural, _synonyms) in CONTRACT_CLASSES.items():
    for _word in {_name.split()[-1], *_synonyms}:
        SINGULAR[_word] = _name
    PLURAL[_plural.split()[-1]] = _name
SINGULAR["crescent"] = "crescent moon"  # also the modifier of "crescent moon(s)"
NUMBERS = {"two": 2, "three": 3, "four": 4}


def _options(**overrides) -> dict:
    """``ingestion.synthetic`` of conf/base with ``overrides``, less ``num_workers``."""
    options = section("ingestion")["synthetic"] | overrides
    del options["num_workers"]  # an execution detail: not a generator_config parameter
    return options


def _files(out: Path) -> list[Path]:
    files = dataset_files(out)
    return [files["karpathy"], *files["captions"].values(), *files["instances"].values()]


def test_same_seed_gives_byte_identical_files_and_workers_do_not_matter(tmp_path):
    a = generate_dataset(tmp_path / "a", **_options(num_images=20, image_size=64, seed=3))
    generate_dataset(
        tmp_path / "b", **_options(num_images=20, image_size=64, seed=3), num_workers=2
    )
    generate_dataset(tmp_path / "c", **_options(num_images=20, image_size=64, seed=4))
    for fa, fb, fc in zip(_files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
        assert fa.read_bytes() != fc.read_bytes(), fa.name
    images_a = sorted((tmp_path / "a" / "images").iterdir())
    assert len(images_a) == 20
    for image in images_a:
        assert image.read_bytes() == (tmp_path / "b" / "images" / image.name).read_bytes()
    assert a["config"]["split_counts"] == {"train": 16, "val": 2, "test": 2}


def test_karpathy_file_has_the_real_fields(small_dataset):
    out, summary = small_dataset
    data = json.loads((out / "dataset_synthetic.json").read_text())
    images = data["images"]
    assert len(images) == 30
    assert [im["split"] for im in images] == ["train"] * 24 + ["val"] * 3 + ["test"] * 3
    sentids = set()
    for k, im in enumerate(images):
        assert set(im) >= {
            "filename",
            "filepath",
            "split",
            "imgid",
            "cocoid",
            "sentences",
            "sentids",
        }
        assert im["imgid"] == k
        assert (out / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) >= 5
        assert len({s["raw"] for s in im["sentences"]}) == len(im["sentences"])
        assert im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert s["imgid"] == k
            assert (
                s["tokens"]
                == s["raw"].lower().replace(",", "").replace(".", "").replace(":", "").split()
            )
            sentids.add(s["sentid"])
    assert len(sentids) == 30 * 5


def test_coco_files_load_with_pycocotools_and_agree_with_karpathy(small_dataset):
    out, _ = small_dataset
    karpathy = json.loads((out / "dataset_synthetic.json").read_text())["images"]
    by_cocoid = {im["cocoid"]: im for im in karpathy}
    seen = set()
    for split in ("train", "val", "test"):
        caps = COCO(str(out / "annotations" / f"captions_{split}.json"))
        inst = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert {c["name"] for c in inst.loadCats(inst.getCatIds())} == set(CONTRACT_CLASSES)
        assert sorted(caps.getImgIds()) == sorted(inst.getImgIds())
        for image_id in caps.getImgIds():
            im = by_cocoid[image_id]
            assert im["split"] == split
            raws = [a["caption"] for a in caps.loadAnns(caps.getAnnIds(imgIds=[image_id]))]
            assert raws == [s["raw"] for s in im["sentences"]]
            assert [a["id"] for a in caps.loadAnns(caps.getAnnIds(imgIds=[image_id]))] == im[
                "sentids"
            ]
            assert caps.imgs[image_id]["file_name"] == im["filename"]
            seen.add(image_id)
    assert seen == set(by_cocoid)


def test_masks_decode_to_the_visible_pixels_of_each_drawn_object(small_dataset):
    out, summary = small_dataset
    size = summary["config"]["image_size"]
    n_captions = summary["config"]["captions_per_image"]
    n_polygons = n_rle = n_occluded = 0
    for split in ("train", "val", "test"):
        inst = COCO(str(out / "annotations" / f"instances_{split}.json"))
        cat_name = {c["id"]: c["name"] for c in inst.loadCats(inst.getCatIds())}
        for image_id in inst.getImgIds():
            pixels = np.asarray(Image.open(out / "images" / inst.imgs[image_id]["file_name"]))
            scene = render_scene(image_id - 1, size, summary["config"]["seed"], n_captions, SCENE)
            assert np.array_equal(pixels, scene.pixels)
            anns = inst.loadAnns(inst.getAnnIds(imgIds=[image_id]))
            assert 1 <= len(scene.objects) <= 4
            drawn = [*scene.objects, *scene.distractors]  # the writer's instance order
            assert len(anns) == len(drawn)
            union = np.zeros((size, size), dtype=bool)
            for ann, obj in zip(anns, drawn):
                assert ann["attributes"]["mentioned"] == obj.mentioned
                assert cat_name[ann["category_id"]] == obj.class_name
                mask = inst.annToMask(ann).astype(bool)
                # Independent of the generator's masks: the saved image's pixels of this object.
                colour = np.all(pixels == np.array(COLOURS[obj.colour], dtype=np.uint8), axis=-1)
                assert np.all(colour[obj.visible_mask]), "visible pixels have the object colour"
                assert np.array_equal(mask, obj.visible_mask)
                assert ann["area"] == mask.sum()
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [
                    xs.min(),
                    ys.min(),
                    xs.max() - xs.min() + 1,
                    ys.max() - ys.min() + 1,
                ]
                if isinstance(ann["segmentation"], list):
                    n_polygons += 1
                else:
                    n_rle += 1
                n_occluded += int((obj.visible_mask != obj.full_mask).any())
                least = (
                    SCENE.min_visible_fraction
                    if obj.mentioned
                    else SCENE.distractor_min_visible_fraction
                )
                assert obj.visible_mask.sum() >= least * obj.full_mask.sum()
                union |= obj.visible_mask
            # Everything else is background: grey, in its range, and never flat (texture).
            rest = pixels[~union]
            assert np.all(rest[:, 0] == rest[:, 1]) and np.all(rest[:, 1] == rest[:, 2])
            assert BACKGROUND_RANGE[0] <= rest.min() and rest.max() <= BACKGROUND_RANGE[1]
            assert rest[:, 0].std() > 5
    assert n_rle > 0 and n_polygons > 0 and n_occluded > 0


def test_captions_only_name_what_is_in_the_image():
    """Class words (contracts' lexicon) name present classes; plurals and counts are right."""
    mentioned: set[str] = set()
    plurals = relations = synonyms = partial = 0
    for index in range(150):
        scene = render_scene(index, 128, 0, 5, SCENE)
        counts: dict[str, int] = {}
        colours: dict[str, set[str]] = {}
        for obj in scene.objects:
            counts[obj.class_name] = counts.get(obj.class_name, 0) + 1
            colours.setdefault(obj.class_name, set()).add(obj.colour)
        for caption in scene.captions:
            tokens = re.sub(r"[^a-z ]", "", caption.lower()).split()
            named = set()
            for i, token in enumerate(tokens):
                cls = PLURAL.get(token) or SINGULAR.get(token)
                if cls is None:
                    continue
                named.add(cls)
                assert cls in counts, f"{caption!r} names {cls} absent from {counts}"
                if token in PLURAL:
                    plurals += 1
                    assert counts[cls] >= 2, caption
                    j = i - 2 if tokens[i - 1] == "crescent" else i - 1
                    if tokens[j] in COLOURS:
                        j -= 1
                    if tokens[j] in NUMBERS:
                        assert counts[cls] >= NUMBERS[tokens[j]], caption
                if token in {s for _, syn in CONTRACT_CLASSES.values() for s in syn}:
                    synonyms += 1
                k = i - 2 if (token == "moon" and tokens[i - 1] == "crescent") else i - 1
                if k >= 0 and tokens[k] in COLOURS:
                    assert tokens[k] in colours[cls], f"{caption!r}: no {tokens[k]} {cls}"
            mentioned |= named
            relations += any(
                r in caption for r in ("left of", "right of", "above", "below", "next to")
            )
            partial += len(named) < len(counts)
    assert mentioned == set(CONTRACT_CLASSES)
    assert plurals > 20 and relations > 50 and synonyms > 50 and partial > 50


def test_scene_has_one_to_four_objects_and_varied_captions():
    n_objects = {len(render_scene(i, 96, 1, 5, SCENE).objects) for i in range(60)}
    assert n_objects == {1, 2, 3, 4}
    scene = render_scene(5, 96, 1, captions=7, scene=SCENE)
    assert len(scene.captions) == 7 == len(set(scene.captions))


def test_up_to_date_check(tmp_path):
    config = generator_config(**_options(num_images=10, image_size=48, seed=1))
    assert not is_up_to_date(tmp_path, config)
    generate_dataset(tmp_path, **_options(num_images=10, image_size=48, seed=1))
    assert is_up_to_date(tmp_path, config)
    other = generator_config(**_options(num_images=10, image_size=48, seed=2))
    assert not is_up_to_date(tmp_path, other)
    (tmp_path / "images" / "000004.png").unlink()
    assert not is_up_to_date(tmp_path, config)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["config"] == config
    (tmp_path / "images" / "notes.txt").write_text("mine")
    generate_dataset(tmp_path, **_options(num_images=6, image_size=48, seed=1))  # stale files go
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == [f"{i:06d}.png" for i in range(1, 7)] + ["notes.txt"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_images": 0},
        {"image_size": 8},
        {"image_format": "gif"},
        {"captions_per_image": 0},
        {"split_fractions": {"train": 0.8, "dev": 0.2}},
        {"split_fractions": {}},
    ],
)
def test_bad_generator_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        generator_config(**_options(seed=0, **kwargs))


def test_conf_is_the_one_home_of_the_generator_parameters():
    """Every option of ``ingestion.synthetic`` is a parameter, and none has a code default."""
    params = inspect.signature(generate_dataset).parameters
    required = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    assert required | {"num_workers"} == set(section("ingestion")["synthetic"])
    with pytest.raises(TypeError):
        generator_config(num_images=10, image_size=48, seed=1)


def test_changed_generator_code_makes_the_dataset_stale(tmp_path):
    """Files written by other generator code (same parameters) are regenerated."""
    config = generator_config(**_options(num_images=4, image_size=48, seed=1))
    generate_dataset(tmp_path, **_options(num_images=4, image_size=48, seed=1))
    assert is_up_to_date(tmp_path, config)
    # The fingerprint is the hash of every module of the generator package (by name) and of
    # the tokeniser.
    modules = sorted(Path(synthetic.__file__).parent.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "captions", "scenes", "writer"}
    digest = hashlib.sha256()
    for path in [*modules, Path(text.__file__)]:
        digest.update(path.read_bytes())
    assert config["generator_source"] == digest.hexdigest()[:16]
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    manifest["config"]["generator_source"] = "0" * 16  # written by an older generator
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert not is_up_to_date(tmp_path, config)


def test_jpeg_output(tmp_path):
    options = _options(num_images=4, image_size=48, seed=2, image_format="jpg")
    summary = generate_dataset(tmp_path, **options)
    data = json.loads((tmp_path / "dataset_synthetic.json").read_text())
    assert [im["filename"] for im in data["images"]] == [f"{i:06d}.jpg" for i in range(1, 5)]
    for im in data["images"]:
        with Image.open(tmp_path / "images" / im["filename"]) as image:
            assert image.format == "JPEG" and image.size == (48, 48)
    assert summary["config"]["image_format"] == "jpg"
