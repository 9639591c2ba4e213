"""Batched ICA loss vs a per-pair loop (Berman's ``lovasz_hinge_flat`` per pair), same inputs.

Times forward + backward through softmax attention for N (word, object) pairs over L cells and
prints both times, their ratio and the largest differences of the losses and logit gradients.

    python benchmarks/bench_ica_loss.py                      # N = 1472 (32 × 20 × 2.3), L = 196
    python benchmarks/bench_ica_loss.py --pairs 5000 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ica_captioning.losses import attention_to_scores, ica_loss


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s ``lovasz_grad`` for one pair: ``[L]`` sorted mask -> ``[L]`` weights."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def _lovasz_hinge_flat(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Berman et al.'s ``lovasz_hinge_flat``: ``[L]`` scores, ``[L]`` float mask -> scalar."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - scores * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    grad = _lovasz_grad(labels[perm])
    return torch.dot(F.relu(errors_sorted), grad)


def loop_loss(attention: torch.Tensor, targets: torch.Tensor, mapping: str) -> torch.Tensor:
    """Per-pair Python loop, like the reference's ``per_image=True``: ``[N, L]`` -> scalar."""
    scores = attention_to_scores(attention, mapping)
    labels = targets.float()
    losses = [_lovasz_hinge_flat(s, y) for s, y in zip(scores, labels)]
    return torch.stack(losses).mean()


def _run(fn, logits: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One forward + backward through softmax; returns (seconds, loss, grad wrt logits)."""
    x = logits.detach().clone().requires_grad_(True)  # [N, L]
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = fn(torch.softmax(x, dim=-1))
    loss.backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, loss.detach(), x.grad


def main() -> None:
    """Parse arguments, run both versions on the same inputs and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1472, help="N pairs (32 × 20 × 2.3 ≈ 1472)")
    parser.add_argument("--cells", type=int, default=196, help="L grid cells (14 × 14)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each version")
    parser.add_argument("--mapping", default="scaled", help="score mapping")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads for both versions (1: stable numbers on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.pairs, args.cells, generator=gen) * 2).to(args.device)  # [N, L]
    # Object masks covering ~15 % of the grid on average, none empty.
    targets = torch.rand(args.pairs, args.cells, generator=gen) < 0.15  # [N, L]
    targets[:, 0] = True
    targets = targets.to(args.device)

    def batched(att):
        return ica_loss(att, targets, mapping=args.mapping)

    def looped(att):
        return loop_loss(att, targets, args.mapping)

    for _ in range(2):  # warm-up (allocator, kernels)
        _run(batched, logits)
    # Interleave the two versions so that load from other processes hits both alike; report the
    # minimum (least disturbed run) and the median.
    times_b, times_l = [], []
    for _ in range(args.repeats):
        t_b, loss_b, grad_b = _run(batched, logits)
        t_l, loss_l, grad_l = _run(looped, logits)
        times_b.append(t_b)
        times_l.append(t_l)
    best_b, best_l = min(times_b), min(times_l)
    med_b, med_l = statistics.median(times_b), statistics.median(times_l)

    print(
        f"ICA loss forward+backward, N={args.pairs} pairs, L={args.cells}, mapping={args.mapping}, "
        f"device={args.device}, torch threads={torch.get_num_threads()}"
    )
    print(f"  runs: {args.repeats} interleaved          min         median")
    print(f"  batched (one sort):   {best_b * 1e3:9.2f} ms  {med_b * 1e3:9.2f} ms")
    print(f"  per-pair loop:        {best_l * 1e3:9.2f} ms  {med_l * 1e3:9.2f} ms")
    print(f"  speed-up (loop/batched): {best_l / best_b:6.1f}x min, {med_l / med_b:6.1f}x median")
    print(f"  loss: batched {loss_b.item():.6f}  loop {loss_l.item():.6f}")
    print(f"  max |loss diff|:      {(loss_b - loss_l).abs().item():.3e}")
    print(f"  max |grad diff|:      {(grad_b - grad_l).abs().max().item():.3e}")
    print(f"  max |grad|:           {grad_b.abs().max().item():.3e}")


if __name__ == "__main__":
    main()
