"""Training-step time with the ICA term (λ_aux = 0.1) vs without (λ_aux = 0), in one run.

A step = teacher-forced decoder forward over cached features, loss (CE + α_c·DSR [+ λ·ICA]),
backward, gradient clipping and an Adam update — exactly the trainer's code path
(`loss_terms` / `combine`). Inputs mimic the embedded dataset: 14×14 grid, caption lengths like
the generated captions, ≈ 1.7 pseudo-labelled tokens per caption. λ = 0 skips the ICA term
entirely (as the trainer does), so the ratio is the full price of ICA.

    python benchmarks/bench_train_step.py                 # CPU defaults (conf/base sizes)
    python benchmarks/bench_train_step.py --device cuda --batch-size 128 --feature-dim 1024 \
        --embed-dim 512 --hidden-dim 512 --attention-dim 512

Goal: ICA adds ≤ 5 % to the step time. Timings on a shared machine are noisy: the two variants
are interleaved step by step and the median is reported.

``--tutorial`` adds a third model to the interleaved timing: the most-used public PyTorch
Show-Attend-Tell implementation's training step (``tutorial_reference.py``: attention projection
of the features recomputed every step, captions sorted and the batch shrunk per step, CE + DSR,
value clipping, Adam) on the same batches, and prints ours (λ = 0, and λ = 0.1) against it.
``--paper-dims`` sets the paper's sizes (batch 32, D = E = H = A = 512, V = 5000, 14×14 grid).

    python benchmarks/bench_train_step.py --paper-dims --tutorial --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tutorial_reference import TutorialDecoder, tutorial_train_step

from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model.decoder import AttentionDecoder
from ica_captioning.params.conf import load_parameters


def make_batch(args: argparse.Namespace, gen: torch.Generator) -> dict[str, torch.Tensor]:
    b, g, d, v = args.batch_size, args.grid_size, args.feature_dim, args.vocab_size
    cells = g * g
    lengths = torch.randint(5, 16, (b,), generator=gen)  # ids incl. <start>/<end>
    t = int(lengths.max()) - 1
    ids = torch.randint(4, v, (b, t + 1), generator=gen)
    ids[:, 0] = 1
    pos = torch.arange(t + 1)
    ids[pos[None] == (lengths[:, None] - 1)] = 2
    ids[pos[None] >= lengths[:, None]] = 0
    valid = torch.rand(b, t, generator=gen) < args.labels_per_caption / (lengths[:, None] - 2)
    valid &= pos[None, :t] < (lengths[:, None] - 2)
    # Random rectangles as object masks.
    y0 = torch.randint(0, g - 3, (b, t, 1, 1), generator=gen)
    x0 = torch.randint(0, g - 3, (b, t, 1, 1), generator=gen)
    yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    masks = (yy >= y0) & (yy < y0 + 4) & (xx >= x0) & (xx < x0 + 5)
    return {
        "features": torch.randn(b, cells, d, generator=gen),
        "inputs": ids[:, :-1],
        "targets": ids[:, 1:],
        "ica_targets": masks.reshape(b, t, cells),
        "ica_valid": valid,
        "ids": ids,
        "lengths": lengths,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--grid-size", type=int, default=14)
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=90)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden-dim", type=int, default=256)
    p.add_argument("--attention-dim", type=int, default=128)
    p.add_argument("--labels-per-caption", type=float, default=1.7)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--tutorial", action="store_true", help="also time the tutorial's step")
    p.add_argument("--threads", type=int, nargs="+", default=[None], help="torch thread counts")
    p.add_argument(
        "--paper-dims",
        action="store_true",
        help="batch 32, D=E=H=A=512, V=5000, grid 14 (overrides those options)",
    )
    args = p.parse_args()
    if args.paper_dims:
        args.batch_size, args.grid_size, args.vocab_size = 32, 14, 5000
        args.feature_dim = args.embed_dim = args.hidden_dim = args.attention_dim = 512
    device = torch.device(args.device)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    batches = [
        {k: v.to(device) for k, v in make_batch(args, gen).items()} for _ in range(args.steps)
    ]
    variants: list[object] = [0.0, 0.1] + (["tutorial"] if args.tutorial else [])
    models, opts = {}, {}
    sizes = {
        "vocab_size": args.vocab_size,
        "feature_dim": args.feature_dim,
        "embed_dim": args.embed_dim,
        "hidden_dim": args.hidden_dim,
        "attention_dim": args.attention_dim,
    }
    init_scale = load_parameters()["train"]["decoder"]["attention_init_scale"]
    for lam in variants:
        torch.manual_seed(0)
        if lam == "tutorial":
            models[lam] = TutorialDecoder(**sizes).to(device)
        else:
            models[lam] = AttentionDecoder(
                **sizes, dropout=0.3, attention_init_scale=init_scale
            ).to(device)
        opts[lam] = torch.optim.Adam(models[lam].parameters(), lr=1e-3)

    def step(lam, batch: dict[str, torch.Tensor]) -> float:
        model, opt = models[lam], opts[lam]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if lam == "tutorial":
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                tutorial_train_step(model, opt, batch["features"], batch["ids"], batch["lengths"])
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                logits, alphas = model(batch["features"], batch["inputs"])
            terms = loss_terms(
                logits,
                alphas,
                batch["targets"],
                batch["ica_targets"],
                batch["ica_valid"],
                lam != 0.0,
                "log",
            )
            loss, _ = combine(terms, 1.0, lam)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    medians = {}
    for threads in args.threads:
        if threads is not None:
            torch.set_num_threads(threads)
        for i in range(args.warmup):
            for lam in variants:
                step(lam, batches[i % len(batches)])
        times: dict[object, list[float]] = {lam: [] for lam in variants}
        for i, batch in enumerate(batches):
            order = variants if i % 2 == 0 else variants[::-1]  # alternate to cancel drift
            for lam in order:
                times[lam].append(step(lam, batch))
        med = {lam: statistics.median(t) for lam, t in times.items()}
        medians[torch.get_num_threads()] = med
        pairs = sum(int(b["ica_valid"].sum()) for b in batches) / len(batches)
        print(
            f"device={device} threads={torch.get_num_threads()} batch={args.batch_size} "
            f"grid={args.grid_size}x{args.grid_size} D={args.feature_dim} E={args.embed_dim} "
            f"H={args.hidden_dim} A={args.attention_dim} V={args.vocab_size} amp={args.amp} "
            f"labelled pairs/batch={pairs:.0f} steps={args.steps}"
        )
        for lam in variants:
            name = "tutorial's step" if lam == "tutorial" else f"lambda_aux={lam:<4}"
            print(
                f"{name:16s} median step {med[lam] * 1e3:8.2f} ms   "
                f"{args.batch_size / med[lam]:8.1f} captions/s"
            )
        print(f"ICA overhead: step time ratio (λ=0.1 / λ=0) = {med[0.1] / med[0.0]:.3f}")
        if args.tutorial:
            print(
                f"ours vs the tutorial's step: {med['tutorial'] / med[0.0]:.2f}x faster (λ=0), "
                f"{med['tutorial'] / med[0.1]:.2f}x faster (λ=0.1)"
            )
    if 1 in medians:
        for threads, med in medians.items():
            if threads != 1:
                scaling = ", ".join(f"{lam} {medians[1][lam] / t:.2f}" for lam, t in med.items())
                print(f"thread scaling time(1 thread)/time({threads} threads): {scaling}")


if __name__ == "__main__":
    main()
