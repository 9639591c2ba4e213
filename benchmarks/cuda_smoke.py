"""CUDA smoke checks of the non-training paths (run on a GPU machine; no data, no downloads).

1. ICA loss on CUDA equals CPU (float32) and stays finite under bf16 autocast; batched loss
   throughput on GPU for N≈1,500 pairs, L=196.
2. Batched beam search on CUDA gives the same captions as on CPU for a randomly initialised
   captioner; images/s at beam 5 on GPU.
3. torchvision Mask R-CNN backend on CUDA with randomly initialised weights saved to a file
   (the path a user's weights file takes); images/s.

Usage: python benchmarks/cuda_smoke.py [--device cpu]   (exits non-zero if any check fails)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"[{'PASS' if ok else 'FAIL'}] {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def loss_checks(dev: torch.device) -> None:
    from ica_captioning.losses import ica_loss

    g = torch.Generator().manual_seed(0)
    n, length = 1500, 196
    logits = torch.randn(n, length, generator=g)
    targets = torch.rand(n, length, generator=g) < 0.15
    for mapping in ("scaled", "log", "identity"):
        att_cpu = logits.softmax(-1).requires_grad_()
        loss_cpu = ica_loss(att_cpu, targets, mapping=mapping)
        loss_cpu.backward()
        att_gpu = logits.to(dev).softmax(-1).requires_grad_()
        loss_gpu = ica_loss(att_gpu, targets.to(dev), mapping=mapping)
        loss_gpu.backward()
        diff = abs(loss_cpu.item() - loss_gpu.item())
        gdiff = (att_cpu.grad - att_gpu.grad.cpu()).abs().max().item()
        check(
            f"ica_loss cuda==cpu ({mapping})",
            diff < 1e-5 and gdiff < 1e-6,
            f"|Δ|={diff:.2e} grad|Δ|={gdiff:.2e}",
        )
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        att = (logits.to(dev) @ torch.eye(length, device=dev)).softmax(-1)
        loss = ica_loss(att, targets.to(dev), mapping="scaled")
    check(
        "ica_loss under bf16 autocast",
        bool(torch.isfinite(loss)) and loss.dtype == torch.float32,
        f"dtype={loss.dtype} value={loss.item():.4f}",
    )
    att = logits.to(dev).softmax(-1).requires_grad_()
    for _ in range(3):
        ica_loss(att, targets.to(dev), mapping="scaled").backward()
    sync()
    t0 = time.perf_counter()
    reps = 50
    for _ in range(reps):
        ica_loss(att, targets.to(dev), mapping="scaled").backward()
    sync()
    dt = (time.perf_counter() - t0) / reps
    print(f"ica_loss fwd+bwd on GPU, N={n}, L={length}: {dt * 1e3:.2f} ms/step")


def beam_checks(dev: torch.device) -> None:
    from ica_captioning.decoding.beam_search import beam_search
    from ica_captioning.model import build_captioner
    from ica_captioning.params.conf import model_params
    from ica_captioning.tokens import END_ID, PAD_ID, START_ID

    cfg = model_params(decoder={"dropout": 0.0})  # conf/base's CPU model
    torch.manual_seed(0)
    model = build_captioner(cfg, vocab_size=90).eval()
    images = torch.randn(64, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    kw = dict(beam_size=5, max_len=16, start_id=START_ID, end_id=END_ID, pad_id=PAD_ID)
    with torch.no_grad():
        out_cpu = beam_search(model, images, **kw)
        model_gpu = model.to(dev)
        out_gpu = beam_search(model_gpu, images, **kw)
        sync()
        t0 = time.perf_counter()
        big = images.repeat(8, 1, 1, 1)
        beam_search(model_gpu, big, batch_size=256, **kw)
        sync()
        dt = time.perf_counter() - t0
    same = out_cpu.token_lists() == out_gpu.token_lists()
    check("beam search cuda == cpu captions (beam 5)", same)
    print(f"beam search on GPU, beam 5: {big.shape[0] / dt:.0f} images/s")


def detection_checks(dev: torch.device) -> None:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from ica_captioning.detection.base import ImageRecord, detections_frame
    from ica_captioning.detection.torchvision_backend import TorchvisionBackend

    with tempfile.TemporaryDirectory() as tmp:
        net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
        path = Path(tmp) / "maskrcnn.pth"
        torch.save(net.state_dict(), path)
        records = []
        rng = np.random.default_rng(0)
        for i in range(16):
            p = Path(tmp) / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(p)
            records.append(ImageRecord(image_id=i, file_path=p.name, path=p, width=256, height=256))
        backend = TorchvisionBackend(
            str(path),
            model="maskrcnn_resnet50_fpn",
            device=str(dev),
            score_threshold=0.0,
            max_detections=100,
            mask_threshold=0.5,
            batch_size=8,
            min_size=256,
            max_size=256,
            categories=None,
            options=None,
        )
        results, quarantine = backend.detect(records[:8])
        rows = detections_frame(results)
        check(
            "torchvision Mask R-CNN on cuda",
            len(results) == 8 and not quarantine,
            f"{len(rows)} rows",
        )
        sync()
        t0 = time.perf_counter()
        backend.detect(records[8:])
        sync()
        print(
            "Mask R-CNN (random weights, 256 px) on GPU: "
            f"{8 / (time.perf_counter() - t0):.1f} images/s"
        )


def main() -> int:
    if "--device" in sys.argv and sys.argv[-1] == "cpu":
        dev = torch.device("cpu")  # dry run of the same code paths
    elif not torch.cuda.is_available():
        print("CUDA is not available", file=sys.stderr)
        return 2
    else:
        dev = torch.device("cuda")
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for fn in (loss_checks, beam_checks, detection_checks):
        try:
            fn(dev)
        except Exception as err:  # report every section, then fail
            check(fn.__name__, False, f"{type(err).__name__}: {err}")
    print("FAILED: " + ", ".join(FAILURES) if FAILURES else "ALL PASSED")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
