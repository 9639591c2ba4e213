"""Matching throughput: captions/s of ``build_pseudo_labels`` on the embedded dataset scaled up.

The embedded dataset is generated (or read from --data), its detections come from the
``annotations`` backend, and images, captions and detections are replicated under new ids until
there are --captions captions. ``--upscale F`` blows every mask up F× (nearest neighbour) so
masks have COCO-like sizes and run counts (128 px × 4 ≈ COCO's 480-640 px).

Prints the stage times, captions/s, the projected time for COCO (616,767 captions), and the
ratio against a straightforward per-caption version (dense masks, no cache) on a subset.

    python benchmarks/bench_matching.py --captions 600000 --upscale 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from ica_captioning.data.readers import read_karpathy
from ica_captioning.data.synthetic import dataset_files, generate_dataset
from ica_captioning.detection import (
    decode_masks,
    detections_frame,
    encode_masks,
    image_records,
)
from ica_captioning.detection.annotations import AnnotationsBackend
from ica_captioning.matching import Lexicon, binarize_fractions, dense_cell_fractions
from ica_captioning.matching.pseudo_labels import build_pseudo_labels, find_mentions

COCO_CAPTIONS = 616_767
# The generator's parameters (conf/base only); the command line sets count, size and seed.
INGESTION_CONF = Path(__file__).resolve().parents[1] / "conf/base/parameters_ingestion.yml"
CONF = INGESTION_CONF.parent


def conf(stage: str) -> dict:
    """conf/base's ``<stage>`` section (reader, detection and matching settings)."""
    return yaml.safe_load((CONF / f"parameters_{stage}.yml").read_text())[stage]


MATCHING = conf("matching")
MATCHING_SETTINGS = {
    "score_threshold": MATCHING["score_threshold"],
    "grid_size": MATCHING["grid_size"],
    "cell_threshold": MATCHING["cell_threshold"],
    "progress": False,
}


def base_tables(data: Path | None, num_images: int, image_size: int, upscale: int):
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="bench_matching_"))
        options = yaml.safe_load(INGESTION_CONF.read_text())["ingestion"]["synthetic"]
        options |= {"num_images": num_images, "image_size": image_size, "seed": 0}
        generate_dataset(data, **options)
    files = dataset_files(data)
    ingestion = conf("ingestion")
    images, captions, _, _ = read_karpathy(
        files["karpathy"],
        restval_split=ingestion["restval_split"],
        on_bad=ingestion["on_bad_annotation"],
    )
    size = int(image_size)
    images["width"], images["height"] = size, size
    backend = AnnotationsBackend(
        [str(p) for p in files["instances"].values()],
        images,
        include_crowd=conf("detection")["include_crowd"],
    )
    results, _ = backend.detect(image_records(images, data))
    detections = detections_frame(results)
    if upscale > 1:
        ok = detections["status"] == "ok"
        dense = decode_masks(detections.loc[ok, "rle_counts"].tolist(), size, size)
        big = dense.repeat(upscale, axis=1).repeat(upscale, axis=2)  # [N, H·F, W·F]
        detections.loc[ok, "rle_counts"] = encode_masks(big)
        detections["height"] = size * upscale
        detections["width"] = size * upscale
    return captions, detections


def replicate(captions: pd.DataFrame, detections: pd.DataFrame, target: int):
    reps = -(-target // len(captions))
    offset = int(max(captions["image_id"].max(), detections["image_id"].max())) + 1
    coffset = int(captions["caption_id"].max()) + 1
    caps, dets = [], []
    for k in range(reps):
        c = captions.copy()
        c["image_id"] += k * offset
        c["caption_id"] += k * coffset
        d = detections.copy()
        d["image_id"] += k * offset
        caps.append(c)
        dets.append(d)
    return pd.concat(caps, ignore_index=True).iloc[:target], pd.concat(dets, ignore_index=True)


def per_caption_reference(captions, detections, lexicon, grid_size, threshold):
    """The obvious loop: per caption, per matched class, decode masks densely, reduce, no cache."""
    ok = detections[detections["status"] == "ok"]
    by_image = {i: g for i, g in ok.groupby("image_id")}
    n = 0
    for iid, tokens in zip(captions["image_id"], captions["tokens"]):
        g = by_image.get(iid)
        if g is None:
            continue
        for _, cname in lexicon.match(list(tokens), set(g["class_name"])):
            rows = g[g["class_name"] == cname]
            h, w = int(rows["height"].iat[0]), int(rows["width"].iat[0])
            union = decode_masks(rows["rle_counts"].tolist(), h, w).max(axis=0)
            binarize_fractions(dense_cell_fractions(union[None], grid_size), threshold)
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="existing embedded dataset")
    parser.add_argument("--images", type=int, default=300, help="base images to generate")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--upscale", type=int, default=4, help="mask blow-up factor")
    parser.add_argument("--captions", type=int, default=200_000, help="captions after scaling")
    parser.add_argument("--reference-captions", type=int, default=2_000)
    args = parser.parse_args()

    t0 = time.perf_counter()
    captions, detections = base_tables(args.data, args.images, args.image_size, args.upscale)
    big_caps, big_dets = replicate(captions, detections, args.captions)
    print(
        f"setup {time.perf_counter() - t0:.1f} s: {len(big_caps):,} captions, "
        f"{big_caps['image_id'].nunique():,} images, {int((big_dets.status == 'ok').sum()):,} "
        f"instances, masks {int(big_dets['height'].iat[0])}x{int(big_dets['width'].iat[0])}"
    )
    lexicon = Lexicon.from_package()

    t = time.perf_counter()
    find_mentions(big_caps, lexicon, {})
    t_lex = time.perf_counter() - t

    t = time.perf_counter()
    pseudo, stats = build_pseudo_labels(big_caps, big_dets, lexicon, **MATCHING_SETTINGS)
    t_all = time.perf_counter() - t
    value = stats.set_index(["statistic", "key"])["value"]
    rate = len(big_caps) / t_all
    print(f"lexicon matching alone: {len(big_caps) / t_lex:,.0f} captions/s")
    print(
        f"build_pseudo_labels: {t_all:.1f} s, {rate:,.0f} captions/s, "
        f"{int(value[('grids', '')]):,} grids, {len(pseudo):,} labels"
    )
    print(f"projected for COCO ({COCO_CAPTIONS:,} captions): {COCO_CAPTIONS / rate / 60:.1f} min")
    print(
        "mean critical objects per caption: "
        f"{value[('mean_critical_objects_per_caption', '')]:.3f}; share with >= 1 match: "
        f"{value[('share_captions_with_match', '')]:.3f}"
    )

    sub = big_caps.iloc[: args.reference_captions]
    sub_ids = set(sub["image_id"])
    sub_dets = big_dets[big_dets["image_id"].isin(sub_ids)]
    t = time.perf_counter()
    build_pseudo_labels(sub, sub_dets, lexicon, **MATCHING_SETTINGS)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    per_caption_reference(sub, sub_dets, lexicon, MATCHING["grid_size"], MATCHING["cell_threshold"])
    t_ref = time.perf_counter() - t
    print(
        f"on {len(sub):,} captions: batched+cached {len(sub) / t_fast:,.0f} captions/s, "
        f"per-caption dense {len(sub) / t_ref:,.0f} captions/s, ratio {t_ref / t_fast:.1f}x"
    )


if __name__ == "__main__":
    main()
