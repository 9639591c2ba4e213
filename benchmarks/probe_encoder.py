"""Linear probe of the frozen encoder: can a linear classifier read an object's class from it?

For every ground-truth instance of the embedded dataset, the encoder's grid features ``[L, D]``
are averaged over the instance's cells (weighted by the area it covers in each cell), and a
multinomial logistic regression is fitted on the **train** split's instances and scored on the
**test** split's. Shape class and colour are probed, for the mentioned objects, the distractors
and all of them, for the randomly initialised trunk and for the pretrained one (the
``pretrained_encoder`` of the last ``kedro run``).

Run from the project root after ``kedro run`` (or ``kedro run --pipeline pretraining``)::

    python benchmarks/probe_encoder.py [--env base]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from pycocotools import mask as mask_utils

from ica_captioning.matching.grid import rle_cell_fractions_batch
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.images import preprocess_images
from ica_captioning.params import DatasetParams, TrainParams
from ica_captioning.pretraining import with_pretrained_weights


def instances(paths: list[str]) -> list[dict]:
    """Every instance of the instances files: image id, class, colour, mentioned, RLE counts."""
    out = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        size = {im["id"]: (im["height"], im["width"]) for im in doc["images"]}
        for ann in doc["annotations"]:
            h, w = size[ann["image_id"]]
            seg = ann["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
                counts = rle["counts"].decode()
            else:
                counts = seg["counts"]
            attrs = ann.get("attributes", {})
            out.append(
                {
                    "image_id": ann["image_id"],
                    "category": ann["category_id"],
                    "colour": attrs.get("colour", ""),
                    "mentioned": attrs.get("mentioned", True),
                    "counts": counts,
                    "size": (h, w),
                }
            )
    return out


@torch.no_grad()
def object_features(encoder: Encoder, files: dict[int, str], objs: list[dict], root: str):
    """``[A, D]`` features of the objects, averaged over their cells."""
    ids = sorted({o["image_id"] for o in objs})
    row = {i: k for k, i in enumerate(ids)}
    feats = []
    for first in range(0, len(ids), 128):
        chunk = ids[first : first + 128]
        x = preprocess_images([files[i] for i in chunk], encoder.image_size, root)
        feats.append(encoder(x))  # [B, L, D]
    grid = torch.cat(feats)
    h, w = objs[0]["size"]
    frac = rle_cell_fractions_batch([o["counts"] for o in objs], h, w, encoder.grid_size)
    weights = torch.from_numpy(frac.reshape(len(objs), -1)).float()
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-9)
    rows = torch.tensor([row[o["image_id"]] for o in objs])
    return torch.einsum("ald,al->ad", grid[rows], weights)


def probe(x_train, y_train, x_test, y_test) -> np.ndarray:
    """Per-object correctness of an L2-regularised logistic regression (standardised inputs)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(0)
    linear = torch.nn.Linear(x_train.shape[1], classes)
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x_train), y_train)
        loss = loss + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (linear(x_test).argmax(1) == y_test).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base")
    args = parser.parse_args()
    torch.set_num_threads(2)
    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        bundle = catalog.load("pretrained_encoder")
        images = catalog.load("images")
    dataset = DatasetParams.parse(params["dataset"], "dataset")
    train = TrainParams.parse(params["train"], "train")
    files = dict(zip(images["image_id"], images["file_path"]))
    split = dict(zip(images["image_id"], images["split"]))
    objs = instances(list(dataset.instances or []))
    by_split = {s: [o for o in objs if split.get(o["image_id"]) == s] for s in ("train", "test")}
    colours = sorted({o["colour"] for o in objs})
    encoders = {"random init": train.replace(encoder={"weights": "none"})}
    if bundle.get("state_dict") is not None:
        encoders["pretrained"] = with_pretrained_weights(train, bundle)
    print(
        f"objects: train {len(by_split['train'])}, test {len(by_split['test'])} "
        f"({sum(not o['mentioned'] for o in by_split['test'])} test distractors)"
    )
    print(f"{'encoder':<12} {'target':<7} {'all':>6} {'mentioned':>10} {'distractors':>12}")
    for name, config in encoders.items():
        start = time.perf_counter()
        encoder = Encoder.from_params(config.encoder).eval()
        x = {s: object_features(encoder, files, o, dataset.images_dir) for s, o in by_split.items()}
        mentioned = np.array([o["mentioned"] for o in by_split["test"]])
        for target, key in (("shape", "category"), ("colour", "colour")):
            if key == "colour":
                y = {
                    s: torch.tensor([colours.index(o["colour"]) for o in by_split[s]])
                    for s in by_split
                }
            else:
                y = {s: torch.tensor([o[key] - 1 for o in by_split[s]]) for s in by_split}
            hit = probe(x["train"], y["train"], x["test"], y["test"])
            print(
                f"{name:<12} {target:<7} {hit.mean():6.3f} {hit[mentioned].mean():10.3f} "
                f"{hit[~mentioned].mean() if (~mentioned).any() else float('nan'):12.3f}"
            )
        print(f"  ({time.perf_counter() - start:.0f} s)")
    majority = np.bincount([o["category"] for o in by_split["test"]]).max() / len(by_split["test"])
    print(f"majority class (shape): {majority:.3f}")


if __name__ == "__main__":
    main()
