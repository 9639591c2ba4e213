"""The evaluation reports recomputed from the saved outputs, independently of the metric code.

The pipeline runs once on the tiny world of conftest.py (:func:`evaluation_run`); every number
here is recomputed from what it saved (generated captions, teacher-forced reference attention)
and from the raw dataset files (captions, COCO instances), with pycocoevalcap's scorers called
directly, a hand-written lexicon of the embedded classes (docs/contracts.md) and masks rebuilt
with pycocotools. Only the report's numbers come from the project's metric code.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ica_captioning.variants import VARIANTS

# ---- an independent lexicon of the embedded dataset (docs/contracts.md, "embedded dataset
# classes"): the class name and its synonyms, each with its plural. --------------------------
CLASS_WORDS = {
    "circle": ["circle", "disc", "disk"],
    "square": ["square", "block"],
    "triangle": ["triangle"],
    "star": ["star"],
    "heart": ["heart"],
    "cross": ["cross", "plus"],
    "diamond": ["diamond", "rhombus"],
    "ring": ["ring", "hoop"],
    "crescent moon": ["moon", "crescent"],
}


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "sh", "ch")) else "s")


WORD_CLASS = {
    form: cls for cls, words in CLASS_WORDS.items() for w in words for form in (w, _plural(w))
}


def mentions(words: list[str]) -> list[tuple[int, str]]:
    """``(position, class)`` of every object mention; "crescent moon" is one, at "moon"."""
    out, i = [], 0
    while i < len(words):
        if words[i] == "crescent" and i + 1 < len(words) and words[i + 1] in ("moon", "moons"):
            out.append((i + 1, "crescent moon"))
            i += 2
            continue
        if words[i] in WORD_CLASS:
            out.append((i, WORD_CLASS[words[i]]))
        i += 1
    return out


def words_of(raw: str) -> list[str]:
    return re.findall(r"[a-z]+", raw.lower())


# ---- reading the saved outputs and the raw dataset ---------------------------------------------
def _saved(out: Path, variant: str, what: str) -> pd.DataFrame:
    return pd.read_parquet(out / f"{variant}_{what}.parquet")


def _report_value(report: pd.DataFrame, variant: str, metric: str, **keys: str) -> pd.Series:
    rows = report[(report["variant"] == variant) & (report["metric"] == metric)]
    for col, value in keys.items():
        rows = rows[rows[col] == value]
    assert len(rows) == 1, (variant, metric, keys)
    return rows.iloc[0]


def _test_references(inputs: dict) -> dict[int, list[str]]:
    """Image id -> raw reference captions of the test split, from the captions table."""
    caps = inputs["captions"].query("split == 'test'")
    refs: dict[int, list[str]] = defaultdict(list)
    for iid, raw in zip(caps["image_id"], caps["raw"]):
        refs[int(iid)].append(str(raw))
    return dict(refs)


def _instances(inputs: dict) -> tuple[dict[int, list[dict]], dict[int, str], dict[int, tuple]]:
    """COCO instances of every split: annotations per image, category names, image sizes."""
    anns: dict[int, list[dict]] = defaultdict(list)
    names, sizes = {}, {}
    for path in inputs["instances"]:
        data = json.loads(Path(path).read_text())
        names.update({c["id"]: c["name"] for c in data["categories"]})
        sizes.update({im["id"]: (im["height"], im["width"]) for im in data["images"]})
        for ann in data["annotations"]:
            anns[int(ann["image_id"])].append(ann)
    return anns, names, sizes


def _ann_mask(ann: dict, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle).astype(bool)


def _grid(mask: np.ndarray, grid: int, threshold: float) -> np.ndarray | None:
    """Binary ``[G*G]`` grid: cells whose covered area fraction is >= threshold (else the best)."""
    h, w = mask.shape
    assert h % grid == 0 and w % grid == 0, "the tiny world has cells of whole pixels"
    frac = mask.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3)).reshape(-1)
    if not frac.any():
        return None
    on = frac >= threshold
    if not on.any():
        on[np.argmax(frac)] = True
    return on


def _class_grids(masks_by_key: dict, grid: int, threshold: float) -> dict:
    """(image, class) -> grid of the union of its instance masks (None when empty)."""
    out = {}
    for key, masks in masks_by_key.items():
        g = _grid(np.logical_or.reduce(masks), grid, threshold)
        if g is not None:
            out[key] = g
    return out


def _ground_truth_grids(inputs: dict, image_ids, grid: int, threshold: float) -> dict:
    anns, names, sizes = _instances(inputs)
    masks = defaultdict(list)
    for iid in image_ids:
        for ann in anns.get(int(iid), []):
            masks[(int(iid), names[ann["category_id"]])].append(_ann_mask(ann, *sizes[int(iid)]))
    return _class_grids(masks, grid, threshold)


def _detection_grids(inputs: dict, image_ids, grid: int, threshold: float, score: float) -> dict:
    from pycocotools import mask as mask_utils

    det = inputs["detections"]
    det = det[(det["status"] == "ok") & (det["score"] >= score) & det["image_id"].isin(image_ids)]
    masks = defaultdict(list)
    for iid, cname, counts, h, w in zip(
        det["image_id"], det["class_name"], det["rle_counts"], det["height"], det["width"]
    ):
        rle = {"size": [int(h), int(w)], "counts": counts.encode()}
        masks[(int(iid), cname)].append(mask_utils.decode(rle).astype(bool))
    return _class_grids(masks, grid, threshold)


def _maps(table: pd.DataFrame, key: str) -> dict[int, np.ndarray]:
    out = {}
    for k, att, g in zip(table[key], table["attention"], table["grid_size"]):
        out[int(k)] = np.asarray(att, dtype=np.float64).reshape(-1, int(g) * int(g))
    return out


def _correctness(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int]:
    """Mean attention mass inside the mask over (map, mask) pairs, and their number."""
    if not pairs:
        return float("nan"), 0
    values = [float((a * m).sum() / a.sum()) for a, m in pairs]
    return float(np.mean(values)), len(values)


def _mention_pairs(words_by_key, image_of, maps, grids) -> list:
    pairs = []
    for key, words in words_by_key.items():
        for pos, cls in mentions(list(words)):
            grid = grids.get((image_of[key], cls))
            if grid is not None:
                pairs.append((maps[key][pos], grid))
    return pairs


# ---- caption metrics ---------------------------------------------------------------------------
def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """coco-caption's PTB tokenizer (Java); lower-case words without Java (as the report)."""
    if shutil.which("java"):
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        coco_format = {k: [{"caption": c} for c in v] for k, v in captions.items()}
        return PTBTokenizer().tokenize(coco_format)
    return {k: [" ".join(words_of(c)) for c in v] for k, v in captions.items()}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_bleu_and_cider_match_pycocoevalcap_on_saved_captions(evaluation_run, eval_inputs, variant):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    generated = _saved(evaluation_run, variant, "generated")
    refs = _test_references(eval_inputs)
    assert set(generated["image_id"]) == set(refs)
    gts = _tokenize(refs)
    res = _tokenize({int(i): [str(c)] for i, c in zip(generated["image_id"], generated["caption"])})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)

    report = pd.read_parquet(evaluation_run / "caption_metrics.parquet")
    for n in range(4):
        row = _report_value(report, variant, f"BLEU-{n + 1}")
        np.testing.assert_allclose(row["value"], bleu[n], rtol=1e-9, atol=0)
    np.testing.assert_allclose(_report_value(report, variant, "CIDEr")["value"], cider, rtol=1e-9)
    # A metric that matches by accident would be 0: CIDEr of these captions is not.
    assert cider > 0


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_chair_matches_an_independent_count(evaluation_run, eval_inputs, variant):
    generated = _saved(evaluation_run, variant, "generated")
    anns, names, _ = _instances(eval_inputs)
    refs = _test_references(eval_inputs)
    n_mentions = n_hallucinated = n_bad_captions = 0
    for iid, caption in zip(generated["image_id"], generated["caption"]):
        # CHAIR's ground truth: the instance classes plus the objects the references name.
        truth = {names[a["category_id"]] for a in anns[int(iid)]}
        truth |= {cls for raw in refs[int(iid)] for _, cls in mentions(words_of(raw))}
        found = [cls for _, cls in mentions(str(caption).split())]
        bad = [cls for cls in found if cls not in truth]
        n_mentions += len(found)
        n_hallucinated += len(bad)
        n_bad_captions += bool(bad)
    assert n_mentions > 0, "the check needs captions that name objects"

    report = pd.read_parquet(evaluation_run / "caption_metrics.parquet")
    chair_i = _report_value(report, variant, "CHAIR-i")
    assert chair_i["value"] == pytest.approx(n_hallucinated / n_mentions, abs=1e-12)
    assert f"{n_mentions} mentions" in chair_i["reason"]
    chair_s = _report_value(report, variant, "CHAIR-s")["value"]
    assert chair_s == pytest.approx(n_bad_captions / len(generated), abs=1e-12)


# ---- grounding metrics -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_attention_correctness_matches_saved_maps_and_masks(evaluation_run, eval_inputs, variant):
    matching = eval_inputs["matching"]
    grid, threshold = matching["grid_size"], matching["cell_threshold"]
    generated = _saved(evaluation_run, variant, "generated")
    references = _saved(evaluation_run, variant, "reference_attention")
    test_ids = set(eval_inputs["images"].query("split == 'test'")["image_id"].astype(int))
    assert set(generated["image_id"]) == test_ids == set(references["image_id"])
    gen_maps = _maps(generated, "image_id")
    ref_maps = _maps(references, "caption_id")
    for maps in (gen_maps, ref_maps):  # every saved map is a distribution over the grid
        for m in maps.values():
            np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-4)

    gen_words = {
        int(i): str(c).split() for i, c in zip(generated["image_id"], generated["caption"])
    }
    ref_words = {int(c): list(t) for c, t in zip(references["caption_id"], references["tokens"])}
    gen_image = {i: i for i in gen_words}
    ref_image = {int(c): int(i) for c, i in zip(references["caption_id"], references["image_id"])}
    truth = _ground_truth_grids(eval_inputs, test_ids, grid, threshold)
    detected = _detection_grids(eval_inputs, test_ids, grid, threshold, matching["score_threshold"])
    # Reference captions against pseudo-labels: exactly the pseudo_labels rows of their captions.
    pl = eval_inputs["pseudo_labels"]
    pl = pl[pl["caption_id"].isin(ref_maps)]
    ref_pl = [
        (ref_maps[int(c)][int(p)], np.unpackbits(np.frombuffer(g, np.uint8))[: grid * grid])
        for c, p, g in zip(pl["caption_id"], pl["token_position"], pl["grid"])
        if int(p) < len(ref_maps[int(c)])
    ]
    expected = {
        ("generated", "pseudo_labels"): _mention_pairs(gen_words, gen_image, gen_maps, detected),
        ("generated", "ground_truth"): _mention_pairs(gen_words, gen_image, gen_maps, truth),
        ("reference", "pseudo_labels"): ref_pl,
        ("reference", "ground_truth"): _mention_pairs(ref_words, ref_image, ref_maps, truth),
    }
    report = pd.read_parquet(evaluation_run / "grounding_metrics.parquet")
    for (captions, masks), pairs in expected.items():
        value, count = _correctness(pairs)
        row = _report_value(
            report, variant, "attention_correctness", captions=captions, masks=masks
        )
        assert int(row["count"]) == count, (captions, masks)
        if count:
            np.testing.assert_allclose(row["value"], value, rtol=1e-6, err_msg=f"{captions}")
        else:
            assert np.isnan(row["value"])
    assert len(expected["reference", "ground_truth"]) > 20  # a check with substance


# ---- teacher forcing: every caption's attention is computed on its own image -------------------
DECODE = {
    "beam_size": 2,
    "max_len": 6,
    "length_penalty": 0.0,
    "allow_unk": False,
    "batch_size": 4,  # chunks of 4 images: a permutation moves captions between chunks
    "progress": False,
    "cpu_attention": "tiled",
}


def _eval_tables(inputs: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = inputs["images"].query("split == 'test'").sort_values("image_id")
    refs = inputs["captions"][["caption_id", "image_id", "tokens"]].merge(
        inputs["encoded_captions"][["caption_id", "ids"]], on="caption_id"
    )
    refs = refs[refs["image_id"].isin(images["image_id"])].sort_values("caption_id")
    return images.reset_index(drop=True), refs.reset_index(drop=True)


@torch.inference_mode()
def _rows_on_own_image(model, references: pd.DataFrame, paths: dict[int, str], root) -> dict:
    """caption id -> ``[n, L]`` maps, each caption fed step by step on its image alone."""
    from ica_captioning.model.images import preprocess_images

    out = {}
    for cid, iid, ids in zip(references["caption_id"], references["image_id"], references["ids"]):
        feats = model.encode(preprocess_images([paths[int(iid)]], model.image_size, root=root))
        state = tuple(model.decoder.init_state(feats))
        maps = []
        for token in list(ids)[:-2]:  # inputs <start>, w_0 .. w_{n-2}: the maps of w_0 .. w_{n-1}
            _, alpha, state = model.decoder.step(feats, torch.tensor([int(token)]), state)
            maps.append(alpha.reshape(1, -1, alpha.shape[-1]).mean(1)[0].numpy())
        out[int(cid)] = np.stack(maps)
    return out


@pytest.mark.slow
def test_teacher_forced_rows_follow_their_own_image(eval_inputs):
    from ica_captioning.decoding.runner import decode_split
    from ica_captioning.model import load_captioner

    model = load_captioner(eval_inputs["bundles"]["ica"])
    root = eval_inputs["root"]
    images, refs = _eval_tables(eval_inputs)
    assert len(images) > DECODE["batch_size"]  # more than one chunk

    def decoded(imgs, rs):
        generated, ref_att = decode_split(model, imgs, rs, root, **DECODE)
        return _maps(generated, "image_id"), _maps(ref_att, "caption_id")

    paths = dict(zip(images["image_id"].astype(int), images["file_path"]))
    own = _rows_on_own_image(model, refs, paths, root)
    gen, rows = decoded(images, refs)
    assert set(rows) == set(own)
    for cid, maps in own.items():
        np.testing.assert_allclose(rows[cid], maps, atol=1e-5, err_msg=f"caption {cid}")

    # Images and references in another order (other chunks): the same rows per caption.
    perm_images = images.iloc[::-1].reset_index(drop=True)
    perm_refs = refs.sample(frac=1.0, random_state=0).reset_index(drop=True)
    perm_gen, perm_rows = decoded(perm_images, perm_refs)
    for cid in rows:
        np.testing.assert_allclose(perm_rows[cid], rows[cid], atol=1e-5)
    for iid in gen:
        np.testing.assert_allclose(perm_gen[iid], gen[iid], atol=1e-5)

    # Two images (in different chunks) swap files: their captions' rows change, and are those
    # of the other image's pixels; every other caption keeps its rows.
    a, b = int(images["image_id"].iloc[0]), int(images["image_id"].iloc[-1])
    swapped = images.assign(
        file_path=images["file_path"].replace({paths[a]: paths[b], paths[b]: paths[a]})
    )
    _, swap_rows = decoded(swapped, refs)
    own_swapped = _rows_on_own_image(model, refs, {**paths, a: paths[b], b: paths[a]}, root)
    moved = set(refs.loc[refs["image_id"].isin([a, b]), "caption_id"].astype(int))
    for cid in rows:
        np.testing.assert_allclose(swap_rows[cid], own_swapped[cid], atol=1e-5)
        if cid in moved:
            assert np.abs(swap_rows[cid] - rows[cid]).max() > 1e-3, f"caption {cid}"
        else:
            np.testing.assert_allclose(swap_rows[cid], rows[cid], atol=1e-5)
