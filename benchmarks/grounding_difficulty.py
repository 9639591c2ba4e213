"""How hard is grounding on the embedded world? Attention correctness of reference maps.

For every labelled (caption, word) pair of a split (the ``pseudo_labels`` of the last
``kedro run``), the attention correctness (mass inside the word's class mask on the grid, as the
evaluation computes it) of maps that need no model:

* ``uniform``: the same weight on every cell (what an attention that looks nowhere gets);
* ``all objects``: uniform over the cells any detected object covers (knows where objects are,
  not which one the word names);
* ``mentioned objects``: uniform over the cells of the objects of the caption's image that
  belong to a class some reference caption names (also ignores the distractors);
* ``the mask itself``: uniform over the word's own mask (1.0 by construction; the ceiling).

It also counts how often a word's class mask covers more than one instance, and how often it
includes an unmentioned distractor (the embedded world's instances say which are mentioned):
the ICA target is the paper's union of all instances of the class, not the one object meant.

    python benchmarks/grounding_difficulty.py [--split test] [--env base]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from ica_captioning.matching.grid import rle_cell_fractions_batch, unpack_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--env", default="base")
    args = parser.parse_args()
    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        labels = catalog.load("pseudo_labels")
        detections = catalog.load("detections")
        images = catalog.load("images")
    threshold = params["matching"]["cell_threshold"]
    ids = set(images.loc[images["split"] == args.split, "image_id"])
    labels = labels[labels["image_id"].isin(ids)]
    det = detections[detections["image_id"].isin(ids) & (detections["status"] == "ok")]
    g = int(labels["grid_size"].iloc[0])
    h, w = int(det["height"].iloc[0]), int(det["width"].iloc[0])
    frac = rle_cell_fractions_batch(det["rle_counts"].tolist(), h, w, g)  # [A, G, G]

    # Which instances are mentioned: from the embedded world's instances files. The annotations
    # backend numbers an image's instances (``instance_id``) in the file's order.
    mentioned_flags: dict[int, list[bool]] = {}
    for path in params["dataset"]["instances"] or []:
        doc = json.loads(Path(path).read_text())
        for ann in doc["annotations"]:
            flag = ann.get("attributes", {}).get("mentioned", True)
            mentioned_flags.setdefault(ann["image_id"], []).append(flag)

    objects, mentioned, count, distractor = {}, {}, {}, {}
    for image_id, rows in det.groupby("image_id").indices.items():
        f = frac[rows]
        objects[image_id] = np.minimum(f.sum(0), 1.0) >= threshold
        flags = mentioned_flags.get(image_id)
        order = det["instance_id"].to_numpy()[rows]
        keep = np.array([flags[i] for i in order] if flags else [True] * len(rows), bool)
        mentioned[image_id] = np.minimum(f[keep].sum(0), 1.0) >= threshold
        classes = det["class_name"].to_numpy()[rows]
        for cls in set(classes):
            own = classes == cls
            count[(image_id, cls)] = int(own.sum())
            distractor[(image_id, cls)] = bool((own & ~keep).any())

    sums = {"uniform": [], "all objects": [], "mentioned objects": [], "the mask itself": []}
    multi = with_distractor = 0
    for row in labels.itertuples():
        mask = unpack_grid(row.grid, g)
        area = mask.sum()
        if area == 0:
            continue
        sums["uniform"].append(area / mask.size)
        for name, prior in (
            ("all objects", objects[row.image_id]),
            ("mentioned objects", mentioned[row.image_id]),
        ):
            sums[name].append((mask & prior).sum() / max(prior.sum(), 1))
        sums["the mask itself"].append(1.0)
        multi += count.get((row.image_id, row.class_name), 1) > 1
        with_distractor += distractor.get((row.image_id, row.class_name), False)
    n = len(sums["uniform"])
    print(f"{args.split} split: {n} labelled (caption, word) pairs, grid {g}×{g}")
    print(f"{'map':<20} attention correctness")
    for name, values in sums.items():
        print(f"{name:<20} {np.mean(values):.3f}")
    print(f"class mask covers > 1 instance: {multi / n:.3f} of pairs")
    print(f"class mask includes an unmentioned distractor: {with_distractor / n:.3f} of pairs")


if __name__ == "__main__":
    main()
