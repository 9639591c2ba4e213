"""Speed of the ``gpu`` environment's training step: profile, torch.compile, CUDA graphs,
channels_last and batch size, in one run (images/s before and after each change).

The step is the trainer's (``loss_terms`` / ``combine``, backward, clipping, Adam) on the
``gpu`` environment's model: ResNet-101 (weights none, BatchNorm calibrated on its own images as
in ``gpu_check.py``) to layer3 at 224 px, upper block fine-tuned, 512-d Show-Attend-Tell
decoder, bf16 autocast, λ_aux = 0.1, V = 5000, captions of 3–13 words. Variants:

* ``eager`` — the trainer as it is;
* ``channels_last`` — trunk weights and images in channels-last memory format;
* ``compile`` — ``torch.compile(decoder._recur, dynamic=True)``: the per-word part of the
  decoder (attention, gate, LSTM cell; the output layer already runs once over all words) fused
  instead of dozens of small kernels per word;
* ``cudagraphs`` — the same with ``mode="reduce-overhead"`` (CUDA graphs: one launch per step
  and shape instead of one per kernel);
* ``cached`` — the decoder alone on precomputed features (what a frozen encoder with the feature
  cache costs), to split the step between trunk and decoder.

Order: the variants that need no compilation, a ``torch.profiler`` summary of the eager step
(kernel launches per step, GPU kernel time / wall time, top kernels) and a batch-size sweep of
``eager``; then the compiled variants and a sweep of the fastest variant of the full step.

    python benchmarks/gpu_speed.py                 # CUDA (a few minutes on an H100)
    python benchmarks/gpu_speed.py --device cpu    # dry run: tiny sizes, same code path

A variant that fails (e.g. no compiler for ``torch.compile``) is reported with its error and
the run goes on; ``--budget`` seconds stops starting new variants.
"""

from __future__ import annotations

import argparse
import statistics
import time
import traceback

import torch
from bench_train_step import make_batch
from gpu_check import calibrate_batchnorm, train_params

from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model import build_captioner

VARIANTS = ("eager", "channels_last", "compile", "cudagraphs", "cached")
#: Variants that compile first (slow to warm up): measured after the others and the profile.
COMPILED = ("compile", "cudagraphs")


def make_batches(args: argparse.Namespace, batch: int, n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random images ``[B, 3, S, S]`` and captions ``[B, T+1]`` with masks.

    Captions and masks as in ``bench_train_step.py`` (3–13 words, ≈ 1.7 labelled words each).
    """
    gen = torch.Generator().manual_seed(batch)
    spec = argparse.Namespace(
        batch_size=batch, grid_size=14, feature_dim=1, vocab_size=args.vocab, labels_per_caption=1.7
    )
    s = args.image_size
    out = []
    for _ in range(n):
        b = make_batch(spec, gen)
        out.append(
            {
                "images": torch.randn(batch, 3, s, s, generator=gen),
                "ids": b["ids"],
                "ica_targets": b["ica_targets"],
                "ica_valid": b["ica_valid"],
            }
        )
    return out


class Bench:
    """One model + optimiser in one variant; ``step`` runs and times one training step."""

    def __init__(self, args, device, variant: str, calib: torch.Tensor) -> None:
        self.args, self.device, self.variant = args, device, variant
        self.cfg = args.cfg
        torch.manual_seed(0)
        m = build_captioner(self.cfg, args.vocab).to(device).train()
        calibrate_batchnorm(m.encoder, calib)
        with torch.no_grad():
            m.fit_feature_stats(m.encoder(calib[:16]).float())
        if variant == "channels_last":
            m.encoder.to(memory_format=torch.channels_last)
        if variant in ("compile", "cudagraphs"):
            # The per-word part of teacher forcing: Show-Attend-Tell's forward loops over
            # ``_recur`` (attention, gate, LSTM) and applies the output layer once after it.
            mode = "reduce-overhead" if variant == "cudagraphs" else "default"
            name = "_recur" if hasattr(m.decoder, "_recur") else "step"
            compiled = torch.compile(getattr(m.decoder, name), dynamic=True, mode=mode)
            setattr(m.decoder, name, compiled)
        self.model = m
        params = m.decoder.parameters() if variant == "cached" else m.parameters()
        self.opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=1e-4)
        self.features: dict[int, torch.Tensor] = {}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float]:
        """One training step: ``(seconds, loss)``."""
        m, dev = self.model, self.device
        amp = self.args.amp_dtype
        images = batch["images"]
        if self.variant == "channels_last":
            images = images.contiguous(memory_format=torch.channels_last)
        if self.variant == "cached" and id(batch) not in self.features:
            with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                self.features[id(batch)] = m.encode(images)  # [B, L, D], standardised
        self.sync()
        t0 = time.perf_counter()
        if self.variant == "cudagraphs":  # a new training iteration for CUDA graph trees
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
            inputs = batch["ids"][:, :-1]
            if self.variant == "cached":
                logits, alphas = m(features=self.features[id(batch)], inputs=inputs)
            else:
                logits, alphas = m(images=images, inputs=inputs)
        terms = loss_terms(
            logits, alphas, batch["ids"][:, 1:], batch["ica_targets"], batch["ica_valid"],
            True, self.cfg.ica_mapping,
        )  # fmt: skip
        loss, _ = combine(terms, 1.0, 0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        self.opt.step()
        self.sync()
        return time.perf_counter() - t0, float(loss.detach())


def to_device(batches, device):
    return [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in batches]


def measure(args, device, variant: str, batch: int) -> dict:
    """Warm-up then timed steps of ``variant`` at ``batch``: ms/step, images/s, first loss."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    batches = to_device(make_batches(args, batch, args.distinct_batches), device)
    t0 = time.perf_counter()
    bench = Bench(args, device, variant, batches[0]["images"])
    losses = [bench.step(batches[i % len(batches)])[1] for i in range(args.warmup)]
    warm = time.perf_counter() - t0
    times = [bench.step(batches[i % len(batches)])[0] for i in range(args.steps)]
    med = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"ms": med * 1e3, "ips": batch / med, "warm": warm, "loss": losses[0], "peak": peak}


def profile_step(args, device) -> None:
    """Kernel launches per step, GPU busy fraction and the top ops of the eager step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    batches = to_device(make_batches(args, args.batch_size, args.distinct_batches), device)
    bench = Bench(args, device, "eager", batches[0]["images"])
    for i in range(2):
        bench.step(batches[i % len(batches)])
    cuda = device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    n = args.profile_steps
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for i in range(n):
            bench.step(batches[i % len(batches)])
        wall = (time.perf_counter() - t0) / n
    events = prof.key_averages()
    launches = sum(e.count for e in events if "LaunchKernel" in e.key) / n
    print(f"profile of {n} eager steps, batch {args.batch_size}: {wall * 1e3:.1f} ms/step wall")
    if cuda:
        # Kernels only: an op's row repeats the time of the kernels it launched (as the table's
        # own "Self CUDA time total" footer counts).
        kernels = [
            e
            for e in events
            if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
        ]
        busy = sum(e.self_device_time_total for e in kernels) / n / 1e3  # ms
        print(
            f"  kernel launches per step: {launches:.0f}; GPU kernel time {busy:.1f} ms/step = "
            f"{100 * busy / (wall * 1e3):.0f} % of the wall time (the rest: launch-bound gaps)"
        )
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=args.profile_rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (cuda) / 2 (cpu)")
    p.add_argument("--sweep", type=int, nargs="*", default=None, help="default 64 128 256")
    p.add_argument("--image-size", type=int, default=None, help="default 224 (cuda) / 32 (cpu)")
    p.add_argument("--dim", type=int, default=512, help="decoder sizes")
    p.add_argument("--vocab", type=int, default=5000)
    p.add_argument("--steps", type=int, default=None, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (compile, graphs)")
    p.add_argument("--distinct-batches", type=int, default=3, help="batches cycled")
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--profile-rows", type=int, default=12)
    p.add_argument("--budget", type=float, default=240.0, help="seconds; no new variant after")
    args = p.parse_args()
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: run on a GPU machine or pass --device cpu")
    args.batch_size = args.batch_size or (32 if cuda else 2)
    args.sweep = args.sweep if args.sweep is not None else ([64, 128, 256] if cuda else [4])
    args.image_size = args.image_size or (224 if cuda else 32)
    args.steps = args.steps or (8 if cuda else 2)
    args.warmup = args.warmup or (6 if cuda else 2)
    if not cuda:
        args.dim, args.vocab, args.backbone = min(args.dim, 64), min(args.vocab, 100), "resnet18"
    args.cfg = train_params(args)  # conf/base's train settings with the gpu model
    device = torch.device(args.device)
    bf16 = cuda and torch.cuda.is_bf16_supported()
    args.amp_dtype = torch.bfloat16 if bf16 else (torch.float16 if cuda else None)
    if cuda:
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    print(
        f"step: {args.backbone} (weights none, calibrated BatchNorm) to layer3, "
        f"{args.image_size} px, decoder {args.dim}, V={args.vocab}, autocast {args.amp_dtype}, "
        f"lambda_aux 0.1; {args.warmup} warm-up + {args.steps} timed steps (median)"
    )
    start = time.perf_counter()
    results: dict[tuple[str, int], dict] = {}

    def run(variant: str, batch: int) -> None:
        if time.perf_counter() - start > args.budget:
            print(f"  {variant:14s} batch {batch:4d}: skipped (--budget {args.budget:.0f} s)")
            return
        try:
            r = measure(args, device, variant, batch)
        except Exception as err:  # a variant that cannot run is a result, not a crash
            print(f"  {variant:14s} batch {batch:4d}: FAILED {type(err).__name__}: {err}")
            traceback.print_exc(limit=2)
            return
        results[variant, batch] = r
        base = results.get(("eager", batch))
        ratio = f", {r['ips'] / base['ips']:.2f}x eager" if base and variant != "eager" else ""
        print(
            f"  {variant:14s} batch {batch:4d}: {r['ms']:8.1f} ms/step {r['ips']:8.1f} images/s"
            f"{ratio}; warm-up {r['warm']:.1f} s, first loss {r['loss']:.2f}, "
            f"peak {r['peak']:.2f} GiB",
            flush=True,
        )

    # Cheap variants, the profile and the eager batch sweep first: a compilation that runs long
    # (into the part's time limit in gpu_issue15.sh) cannot take their results with it.
    compiled = [v for v in args.variants if v in COMPILED]
    print(f"variants at batch {args.batch_size}:")
    for variant in [v for v in args.variants if v not in COMPILED]:
        run(variant, args.batch_size)
    try:
        profile_step(args, device)
    except Exception as err:  # the profiler is a measurement too: report, go on
        print(f"profile FAILED {type(err).__name__}: {err}")
    print("batch sweep (eager):")
    for batch in args.sweep:
        run("eager", batch)
    print(f"compiled variants at batch {args.batch_size}:")
    for variant in compiled:
        run(variant, args.batch_size)
    # The fastest change of the full step (``cached`` leaves the trunk out: not comparable).
    others = [
        (r["ips"], v)
        for (v, b), r in results.items()
        if b == args.batch_size and v not in ("eager", "cached")
    ]
    if others:
        best = max(others)[1]
        print(f"batch sweep ({best}, the fastest variant of the full step at {args.batch_size}):")
        for batch in args.sweep:
            run(best, batch)
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
