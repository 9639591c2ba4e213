"""Batched beam search vs a straightforward one-image-at-a-time beam search.

Same model (a randomly initialised real Show-Attend-Tell captioner from ``ica_captioning.model``,
default embedded-dataset sizes), same images, same beam size and maximum length. Checks the
captions are identical and prints the throughput ratio measured in this run (best of
``--repeats`` timings of each, run alternately).

    python benchmarks/bench_beam_search.py [--images 64] [--beam 5] [--max-len 16] [--threads 1]
        [--repeats 3] [--grid 14] [--attention-dim 128] [--device cpu]

The per-image reference gets every saving that does not need several images: beams batched,
features and per-image decoder state shared by the beams, the same decoder code. What batching
adds is amortising the decoder's weights over many rows (the per-image LSTM matmuls are
weight-bandwidth bound) and the per-step Python/dispatch work. The attention's elementwise work
(``R·L·A`` per step) is the same either way; the decoder's CPU inference path makes it cheap
(``docs/training.md``, "How the attention is computed"), which is what lets batching show on a CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from ica_captioning.decoding import beam_search_features
from ica_captioning.tokens import END_ID, PAD_ID, START_ID, UNK_ID

BANNED = (PAD_ID, START_ID, UNK_ID)


@torch.inference_mode()
def per_image_beam_search(decoder, features, beam_size, max_len):
    """Textbook beam search for ONE image ``features [1, L, D]``: beams batched, images not.

    Like the textbook (e.g. Show-Attend-Tell tutorials) it copies the image to the ``K`` beams
    (an ``expand``, no copy); it also gets the saving the batched search has: the decoder's
    per-image state slots (``image_state_slots``, identical for all beams) are never reordered.
    """
    k = beam_size
    image_slots = set(getattr(decoder, "image_state_slots", ()))
    feats = features.expand(k, *features.shape[1:])  # [K, L, D]
    state = decoder.init_state(feats)
    dev = features.device
    scores = torch.full((k,), float("-inf"), device=dev)
    scores[0] = 0.0
    inputs = torch.full((k,), START_ID, dtype=torch.long, device=dev)
    finished = torch.zeros(k, dtype=torch.bool, device=dev)
    history = torch.zeros(k, 0, dtype=torch.long, device=dev)
    for t in range(max_len + 1):
        logits, _, state = decoder.step(feats, inputs, state)
        logp = torch.log_softmax(logits, -1)
        logp[:, list(BANNED)] = float("-inf")
        if t == max_len:
            keep = logp[:, END_ID].clone()
            logp.fill_(float("-inf"))
            logp[:, END_ID] = keep
        done = finished | torch.isinf(scores)
        frozen = torch.full_like(logp[0], float("-inf"))
        frozen[PAD_ID] = 0.0
        logp = torch.where(done[:, None], frozen, logp)
        cand = (scores[:, None] + logp).view(-1)
        scores, idx = cand.topk(k)
        src, tok = idx // logp.shape[1], idx % logp.shape[1]
        state = tuple(s if i in image_slots else s[src] for i, s in enumerate(state))
        finished = done[src] | (tok == END_ID)
        history = torch.cat([history[src], tok[:, None]], 1)
        inputs = tok
        if bool((finished | torch.isinf(scores)).all()):
            break
    best = history[int(scores.argmax())].tolist()
    return [w for w in best if w not in (END_ID, PAD_ID)]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each; best is kept")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--vocab", type=int, default=60)
    parser.add_argument("--grid", type=int, default=14, help="attention grid G (L = G*G)")
    parser.add_argument("--attention-dim", type=int, default=128)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--sharpness", type=float, default=8.0, help="scale of output weights")
    parser.add_argument("--end-bias", type=float, default=2.0, help="subtracted from <end> logit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    try:
        from ica_captioning.model.captioner import build_captioner
        from ica_captioning.params.conf import model_params

        config = model_params(
            encoder={"grid_size": args.grid},
            decoder={"attention_dim": args.attention_dim, "hidden_dim": args.hidden_dim},
        )
        model = build_captioner(config, vocab_size=args.vocab).eval().to(args.device)
        what = f"random-init ica_captioning.model captioner {config.to_dict()}"
        g = model.grid_size
        images = torch.randn(args.images, 3, 128, 128, device=args.device)
        with torch.inference_mode():
            features = model.encode(images)  # [N, L, D]
    except ImportError as err:
        raise SystemExit(f"ica_captioning.model is needed for this benchmark: {err}") from err
    decoder = model.decoder
    # An untrained decoder's next-word distribution is nearly uniform, so raw log-probability
    # beam search would end every caption at once (log p(<end>) ~ log p(any word)). Make words
    # peakier and <end> rarer: with the defaults every caption runs to max_len, so both searches
    # decode the same number of steps. (With --end-bias 0 this random model has exactly tied
    # cyclic hypotheses, and round-off between batch shapes may pick a different, equally
    # scored beam in a few images.)
    with torch.no_grad():
        decoder.out.weight.mul_(args.sharpness)
        decoder.out.bias[END_ID] -= args.end_bias
    print(f"model: {what}; grid {g}x{g}, features {tuple(features.shape)}, vocab {args.vocab}")

    kw = dict(start_id=START_ID, end_id=END_ID, pad_id=PAD_ID, banned_ids=BANNED)
    # Warm-up both paths (allocator, lazy init) on a few images so neither pays first-call costs.
    beam_search_features(decoder, features[:4], beam_size=args.beam, max_len=args.max_len, **kw)
    for i in range(2):
        per_image_beam_search(decoder, features[i : i + 1], args.beam, args.max_len)
    t_batched, t_loop = [], []
    for _ in range(args.repeats):  # alternate, so a slow spell of the machine hits both
        sync()
        t0 = time.perf_counter()
        batched = beam_search_features(
            decoder, features, beam_size=args.beam, max_len=args.max_len, **kw
        )
        sync()
        t_batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop = [
            per_image_beam_search(decoder, features[i : i + 1], args.beam, args.max_len)
            for i in range(features.shape[0])
        ]
        sync()
        t_loop.append(time.perf_counter() - t0)

    same = batched.token_lists() == loop
    mean_len = float(batched.lengths.float().mean())
    print(
        f"{args.images} images, beam {args.beam}, max_len {args.max_len}, "
        f"mean caption length {mean_len:.1f}, device {args.device}, "
        f"{torch.get_num_threads()} CPU thread(s)"
    )
    best_b, best_l = min(t_batched), min(t_loop)
    print(f"batched beam search : {best_b:8.3f} s  ({args.images / best_b:8.1f} images/s)")
    print(f"per-image beam search: {best_l:8.3f} s  ({args.images / best_l:8.1f} images/s)")
    print(
        f"  (best of {args.repeats}; all batched {[round(t, 3) for t in t_batched]}, "
        f"all per-image {[round(t, 3) for t in t_loop]})"
    )
    print(f"identical captions: {same}")
    print(f"throughput ratio (batched / per-image): {best_l / best_b:.1f}x")
    if not same:
        raise SystemExit("captions differ between batched and per-image beam search")


if __name__ == "__main__":
    main()
