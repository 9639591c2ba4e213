"""One prepared check of the CUDA / AMP / ResNet-101 training path (no downloads, no data).

Run on a GPU machine (finishes in well under 3 minutes on one H100):

    python benchmarks/gpu_check.py                  # or: bash benchmarks/gpu_check.sh

Dry run on CPU (tiny sizes, same code path minus CUDA):

    python benchmarks/gpu_check.py --device cpu

What it checks, printing PASS/FAIL per item and exiting non-zero on any failure:
1. CUDA is available (device name, bf16 support).
2. Training steps of the full captioner — ResNet-101 (weights none) to layer3 at 224 px
   (14×14 grid), upper block fine-tuned, 512-d decoder — under ``torch.autocast`` bf16:
   loss finite, gradients finite, ICA loss computed under autocast is finite float32.
3. images/s for λ_aux = 0 and λ_aux = 0.1 (same batches, interleaved), and the ratio.
4. The real trainer end to end (``train_captioner``): one epoch on a small generated dataset
   (images written to a temp folder), DataLoader workers + pinned memory, AMP, checkpoint,
   validation; and the bundle reloads with ``load_captioner``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model import build_captioner, load_captioner
from ica_captioning.params import TrainParams, deep_merge
from ica_captioning.params.conf import load_parameters
from ica_captioning.training import train_captioner

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def model_config(args: argparse.Namespace) -> dict:
    return {
        "encoder": {
            "backbone": args.backbone,
            "weights": "none",
            "layer": "layer3",
            "grid_size": 14,
            "image_size": args.image_size,
            "fine_tune_blocks": 1,
        },
        "decoder": {
            "embed_dim": args.dim,
            "hidden_dim": args.dim,
            "attention_dim": args.dim,
            "dropout": 0.5,
        },
    }


def train_params(args: argparse.Namespace, **overrides) -> TrainParams:
    """conf/base's train settings with this check's model and ``overrides``."""
    return TrainParams.resolve(
        load_parameters()["train"], deep_merge(model_config(args), overrides)
    )


@torch.no_grad()
def calibrate_batchnorm(encoder: torch.nn.Module, images: torch.Tensor, chunk: int = 8) -> None:
    """Give a random-weight trunk's BatchNorm layers the statistics of its own activations.

    A randomly initialised ResNet keeps BatchNorm's initial running statistics (mean 0,
    variance 1), so in eval mode (the captioner freezes BatchNorm) nothing normalises the
    activations and they grow with depth: a random ResNet-101 reaches values around 1e5 by
    layer3. A trained network's statistics match its activations. This sets every BatchNorm
    layer's running mean and variance to the cumulative statistics of ``images`` (the
    ``update_bn`` recipe), layer by layer as the activations flow, so the benchmark's trunk
    behaves like a trained one in scale without downloading weights.
    """
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    for lo in range(0, len(images), chunk):
        encoder(images[lo : lo + chunk])
    for m in norms:
        m.momentum = momenta[m]
        m.eval()


def step_benchmark(args: argparse.Namespace, device: torch.device, amp: torch.dtype | None):
    vocab = 100
    cfg = train_params(args)
    b, s, g = args.batch_size, args.image_size, 14
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(b, 3, s, s, generator=gen).to(device)
    ids = torch.randint(4, vocab, (b, 16), generator=gen)
    ids[:, 0] = 1
    ids[:, -1] = 2
    ids = ids.to(device)
    tg = torch.zeros(b, 15, g * g, dtype=torch.bool)
    tg[:, 3, 20:60] = True
    tg[:, 7, 100:140] = True
    valid = torch.zeros(b, 15, dtype=torch.bool)
    valid[:, [3, 7]] = True
    tg, valid = tg.to(device), valid.to(device)
    models = {}
    for lam in (0.0, 0.1):
        torch.manual_seed(0)
        m = build_captioner(cfg, vocab).to(device).train()
        if not args.raw_batchnorm:
            calibrate_batchnorm(m.encoder, images)
        with torch.no_grad():  # as the trainer does: standardise with training features
            m.fit_feature_stats(m.encoder(images[: min(b, 16)]).float())
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-4)
        models[lam] = (m, opt)

    def step(lam: float) -> tuple[float, dict]:
        m, opt = models[lam]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits, alphas = m(images=images, inputs=ids[:, :-1])
        terms = loss_terms(logits, alphas, ids[:, 1:], tg, valid, True, cfg.ica_mapping)
        loss, parts = combine(terms, 1.0, lam)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads_ok = all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        info = {
            "loss": loss.item(),
            "grads_ok": bool(grads_ok),
            "ica": parts["ica"],
            "alpha_dtype": alphas.dtype,
        }
        return time.perf_counter() - t0, info

    first = []
    for _ in range(args.warmup):
        for lam in (0.0, 0.1):
            _, info = step(lam)
            first.append(info["loss"])
    # A first loss near ln V (uniform prediction) plus the DSR and ICA terms says the step
    # trains a model in a realistic state; a random trunk with raw BatchNorm statistics gave
    # 576,465 (benchmarks/results/h100_gpu_check.txt, before calibrate_batchnorm).
    check(
        "loss realistic",
        all(loss < 3 * math.log(vocab) for loss in first),
        f"first steps {[round(x, 3) for x in first]}, ln V = {math.log(vocab):.2f}",
    )
    times = {0.0: [], 0.1: []}
    infos = []
    for i in range(args.steps):
        for lam in (0.0, 0.1) if i % 2 == 0 else (0.1, 0.0):
            t, info = step(lam)
            times[lam].append(t)
            infos.append(info)
    check(
        "loss finite", all(np.isfinite(i["loss"]) for i in infos), f"last={infos[-1]['loss']:.4f}"
    )
    check("gradients finite", all(i["grads_ok"] for i in infos))
    ica = infos[-1]["ica"]
    check(
        "ICA loss under autocast",
        bool(torch.isfinite(ica)) and ica.dtype == torch.float32,
        f"value={float(ica):.4f} dtype={ica.dtype} attention dtype={infos[-1]['alpha_dtype']}",
    )
    med = {lam: statistics.median(t) for lam, t in times.items()}
    for lam in (0.0, 0.1):
        print(f"    lambda_aux={lam}: {med[lam] * 1e3:.1f} ms/step, {b / med[lam]:.1f} images/s")
    print(f"    ICA step-time ratio (0.1 / 0): {med[0.1] / med[0.0]:.3f}")
    if device.type == "cuda":
        print(f"    peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def tiny_tables(root: Path, n_images: int, size: int) -> dict:
    """A small colour/shape captioning set in the contract formats (images written to root)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    itos = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "green", "blue", "square", "small"]
    colours = {5: (220, 30, 30), 6: (30, 200, 30), 7: (30, 30, 220)}
    img_rows, cap_rows, pl_rows = [], [], []
    cid = 0
    for i in range(n_images):
        split = "train" if i < int(n_images * 0.8) else "val"
        c = 5 + i % 3
        side = size // 3
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        pix = np.full((size, size, 3), 128, np.uint8)
        pix[y0 : y0 + side, x0 : x0 + side] = colours[c]
        Image.fromarray(pix).save(root / f"images/{i:05d}.png")
        img_rows.append({"image_id": i, "file_path": f"images/{i:05d}.png", "split": split})
        m = np.zeros((size, size), bool)
        m[y0 : y0 + side, x0 : x0 + side] = True
        edges = np.linspace(0, size, 15).astype(int)
        frac = np.add.reduceat(np.add.reduceat(m, edges[:-1], 0), edges[:-1], 1) / np.outer(
            np.diff(edges), np.diff(edges)
        )
        grid = np.packbits((frac >= 0.5).reshape(-1)).tobytes()
        for words in ([4, c, 8], [4, 9, c, 8]):
            ids = [1, *words, 2]
            cap_rows.append(
                {"caption_id": cid, "image_id": i, "split": split, "ids": ids, "length": len(ids)}
            )
            pl_rows.append(
                {
                    "caption_id": cid,
                    "image_id": i,
                    "token_position": len(words) - 1,
                    "class_name": "square",
                    "grid_size": 14,
                    "grid": grid,
                }
            )
            cid += 1
    return {
        "images": pd.DataFrame(img_rows),
        "encoded_captions": pd.DataFrame(cap_rows),
        "pseudo_labels": pd.DataFrame(pl_rows),
        "vocabulary": {"itos": itos, "min_freq": 1, "max_len": 8},
    }


def trainer_end_to_end(args: argparse.Namespace, device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = tiny_tables(root / "data", args.e2e_images, args.image_size)
        cfg = train_params(
            args,
            device=device.type,
            epochs=1,
            batch_size=args.batch_size,
            lr=4e-4,
            amp=device.type == "cuda",
            amp_dtype="bfloat16",
            num_workers=2,
            pin_memory=device.type == "cuda",
            checkpoint_dir=str(root / "ckpt"),
            feature_cache={"dir": str(root / "cache")},
            val_max_images=16,
            progress_bar=False,
        )
        t0 = time.perf_counter()
        bundle, hist = train_captioner(
            cfg,
            data["images"],
            data["encoded_captions"],
            data["pseudo_labels"],
            data["vocabulary"],
            root / "data",
        )
        dt = time.perf_counter() - t0
        row = hist.iloc[-1]
        check(
            "train_captioner end to end (workers, pinned memory, AMP, checkpoint)",
            bool(np.isfinite(row["train_loss"]))
            and any((root / "ckpt").glob("*/last.pt"))
            and np.isfinite(row["val_attention_mass"]),
            f"{dt:.1f} s, loss {row['train_loss']:.3f}, ica {row['train_ica']:.3f}, "
            f"{row['images_per_s']:.1f} images/s",
        )
        model = load_captioner(bundle, device=device)
        check("bundle reloads", model.grid_size == 14)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=None, help="default 224 (cuda) / 64 (cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (cuda) / 2 (cpu)")
    p.add_argument("--dim", type=int, default=512, help="decoder sizes")
    p.add_argument("--steps", type=int, default=None, help="timed steps per λ")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--e2e-images", type=int, default=None)
    p.add_argument(
        "--raw-batchnorm",
        action="store_true",
        help="keep the random trunk's initial BatchNorm statistics (the old, exploding set-up)",
    )
    args = p.parse_args()
    cuda = args.device == "cuda"
    args.image_size = args.image_size or (224 if cuda else 32)
    args.batch_size = args.batch_size or (32 if cuda else 2)
    args.steps = args.steps or (10 if cuda else 2)
    args.e2e_images = args.e2e_images or (160 if cuda else 6)
    if cuda:
        args.warmup = max(args.warmup, 2)
    else:
        args.warmup = 1
        args.dim = min(args.dim, 64)
    start = time.perf_counter()
    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")
    if cuda:
        ok = torch.cuda.is_available()
        check("CUDA available", ok)
        if not ok:
            sys.exit(1)
        device = torch.device("cuda")
        bf16 = torch.cuda.is_bf16_supported()
        print(f"    device: {torch.cuda.get_device_name(0)}, bf16 supported: {bf16}")
        amp = torch.bfloat16 if bf16 else torch.float16
        torch.backends.cudnn.benchmark = True
    else:
        print("dry run on CPU (tiny sizes); CUDA not checked")
        device, amp = torch.device("cpu"), torch.bfloat16
    print(
        f"step benchmark: {args.backbone} (weights none) to layer3, {args.image_size} px, "
        f"batch {args.batch_size}, decoder {args.dim}, autocast {amp}"
    )
    step_benchmark(args, device, amp)
    trainer_end_to_end(args, device)
    print(f"total {time.perf_counter() - start:.1f} s; failures: {FAILURES or 'none'}")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
