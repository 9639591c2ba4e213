"""Batched beam search vs straightforward one-image-at-a-time beam searches.

Default mode: same model (a randomly initialised real Show-Attend-Tell captioner from
``ica_captioning.model``, default embedded-dataset sizes), same images, same beam size and
maximum length. Checks the captions are identical and prints the throughput ratio measured in
this run (best of ``--repeats`` timings of each, run alternately).

    python benchmarks/bench_beam_search.py [--images 64] [--beam 5] [--max-len 16] [--threads 1]
        [--repeats 3] [--grid 14] [--attention-dim 128] [--device cpu]

The per-image reference gets every saving that does not need several images: beams batched,
features and per-image decoder state shared by the beams (one feature row and ``init_state`` on
one row for the ``K`` beams, ``image_state_slots``), the same decoder code; the line after it
times the reference as it was before, with ``K`` copies of the image. What batching
adds is amortising the decoder's weights over many rows (the per-image LSTM matmuls are
weight-bandwidth bound) and the per-step Python/dispatch work. The attention's elementwise work
(``R·L·A`` per step) is the same either way; the decoder's CPU inference path makes it cheap
(``docs/training.md``, "How the attention is computed"), which is what lets batching show on a CPU.
``--threads 1 2`` times each thread count in turn.

Paper dimensions (``--paper-dims``): the project's ``AttentionDecoder`` at D = E = H = A = 512,
L = 196 (grid 14), V = 5000, 32 images, beam 5, at most 19 words (``attention_init_scale`` and
dropout from ``conf/base``); random standardised features, no encoder. The output weights are
scaled (``--sharpness``) so chosen words are about as probable as a trained model's, and the
``<end>`` bias is calibrated by bisection so that the batched search's captions average
``--target-len`` words at varied lengths. ``--end-rise R`` adds ``R·t`` to the ``<end>`` logit of
step ``t`` (:class:`EndRiseDecoder`): without it a random decoder's ``p(<end>)`` only fluctuates,
so beams keep finding live continuations and every search runs to the cap; with it searches end
a few steps after their captions, as a trained model's do. A second reference joins: the
Show-Attend-Tell tutorial's per-image search whose beam shrinks as hypotheses finish
(:func:`shrinking_beam_search`). Prints each search's decoder steps and rows, caption lengths,
times, agreement with the batched captions and thread scaling; ``--profile`` adds a
``torch.profiler`` table of one batched search.

    python benchmarks/bench_beam_search.py --paper-dims --threads 1 2 --repeats 3 [--profile]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from tutorial_reference import TutorialDecoder, tutorial_beam_search

from ica_captioning.decoding import beam_search_features
from ica_captioning.model.cpu_attention import use_kernel
from ica_captioning.tokens import END_ID, PAD_ID, START_ID, UNK_ID

BANNED = (PAD_ID, START_ID, UNK_ID)

#: ``--paper-dims``: Show-Attend-Tell at the paper's sizes (COCO vocabulary of ~5000 words).
PAPER_DIMS = dict(
    images=32,
    beam=5,
    max_len=19,
    vocab=5000,
    grid=14,
    feature_dim=512,
    embed_dim=512,
    hidden_dim=512,
    attention_dim=512,
)


@torch.inference_mode()
def per_image_beam_search(decoder, features, beam_size, max_len, share=True):
    """Textbook beam search for ONE image ``features [1, L, D]``: beams batched, images not.

    Same algorithm as the batched search (finished beams stay, score frozen), so the same
    captions. Like the textbook (e.g. Show-Attend-Tell tutorials) it starts from ``K`` copies of
    the initial state, only the first live. With ``share`` (and a decoder with
    ``image_state_slots``) it also gets the batched search's saving: the features and the
    decoder's per-image state slots stay at one row shared by the ``K`` beams (docs/contracts.md)
    and are never reordered. ``share=False`` is this reference as it was before: the features
    expanded to ``K`` rows, so the decoder sees ``K`` one-row images (``init_state`` projects
    the annotations ``K`` times and every step reads ``K`` copies of features and projections).
    """
    k = beam_size
    slots = getattr(decoder, "image_state_slots", None)
    image_slots = set(slots or ())
    if share and slots is not None:
        feats = features  # [1, L, D]
        state = tuple(
            s if i in image_slots else s.expand(k, *s.shape[1:]).contiguous()
            for i, s in enumerate(decoder.init_state(features))
        )
    else:
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


@torch.inference_mode()
def shrinking_beam_search(decoder, features, beam_size, max_len):
    """The Show-Attend-Tell tutorial's per-image beam search (its ``eval.py``), ONE image.

    ``features [1, L, D]``. Step 0 decodes the single ``<start>`` row and keeps the top ``k``
    words. Whenever a kept candidate is ``<end>``, its sequence is set aside as complete and the
    beam shrinks (``k -= 1``); the search stops when ``k`` reaches 0 or after the step that may
    end a ``max_len``-word caption (continuations past the cap are dropped). The answer is the
    complete sequence of best score (raw log-probability including ``<end>``); if none completed,
    the best live one (``max_len`` words). Like the other searches it never emits ``BANNED``.

    Features and the decoder's per-image state slots stay at one row (``image_state_slots``,
    docs/contracts.md); a decoder without them gets the features expanded to the live beams.
    """
    slots = getattr(decoder, "image_state_slots", None)
    image_slots = set(slots or ())
    k = beam_size
    dev = features.device
    feats = features  # [1, L, D]; expanded to [k, L, D] for a decoder without image slots
    state = tuple(decoder.init_state(features))  # 1 row
    inputs = torch.full((1,), START_ID, dtype=torch.long, device=dev)
    scores = torch.zeros(1, device=dev)
    seqs = torch.zeros(1, 0, dtype=torch.long, device=dev)
    complete: list[list[int]] = []
    complete_scores: list[float] = []
    banned = list(BANNED)
    for t in range(max_len + 1):
        logits, _, state = decoder.step(feats, inputs, state)
        logp = torch.log_softmax(logits, -1)  # [k, V]
        logp[:, banned] = float("-inf")
        vocab = logp.shape[1]
        top, idx = (scores[:, None] + logp).view(-1).topk(k)  # [k]
        src, tok = idx // vocab, idx % vocab
        ended = tok == END_ID
        n_ended = int(ended.sum())
        if n_ended:
            for j in ended.nonzero().view(-1).tolist():
                complete.append(seqs[src[j]].tolist())
                complete_scores.append(float(top[j]))
            k -= n_ended
        if k == 0 or t == max_len:
            break
        live = ~ended
        src, tok, scores = src[live], tok[live], top[live]
        seqs = torch.cat([seqs[src], tok[:, None]], 1)
        state = tuple(
            s if i in image_slots else s.index_select(0, src) for i, s in enumerate(state)
        )
        if slots is None:
            feats = features.expand(k, *features.shape[1:])
        inputs = tok
    if complete:
        return complete[max(range(len(complete)), key=complete_scores.__getitem__)]
    return seqs[int(scores.argmax())].tolist()


class CountingDecoder:
    """Forwards ``init_state``/``step`` to a decoder; counts steps per search and decoded rows."""

    def __init__(self, decoder) -> None:
        self.decoder = decoder
        self.searches: list[int] = []  # decoder steps of each search (one init_state each)
        self.rows = 0
        if hasattr(decoder, "image_state_slots"):
            self.image_state_slots = decoder.image_state_slots

    @property
    def steps(self) -> int:
        return sum(self.searches)

    def init_state(self, features):
        self.searches.append(0)
        return self.decoder.init_state(features)

    def step(self, features, tokens, state):
        self.searches[-1] += 1
        self.rows += int(tokens.shape[0])
        return self.decoder.step(features, tokens, state)


class EndRiseDecoder:
    """A decoder whose ``<end>`` logit rises by ``rise`` per step, like a trained captioner's.

    A trained model's ``p(<end>)`` grows as the sentence completes, on every beam at once, so a
    search ends a few steps after its captions; a random decoder's ``<end>`` logit only
    fluctuates. Adds ``rise * t`` to the ``<end>`` logit of step ``t`` (counted from
    ``init_state``; every search here steps all its rows together). ``--end-rise``.
    """

    def __init__(self, decoder, rise: float) -> None:
        self.decoder = decoder
        self.rise = float(rise)
        self.t = 0
        if hasattr(decoder, "image_state_slots"):
            self.image_state_slots = decoder.image_state_slots

    def init_state(self, features):
        self.t = 0
        return self.decoder.init_state(features)

    def step(self, features, tokens, state):
        logits, alpha, state = self.decoder.step(features, tokens, state)
        logits[:, END_ID] += self.rise * self.t
        self.t += 1
        return logits, alpha, state


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_alternating(
    paths: dict[str, Callable[[], object]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every path ``repeats`` times, alternating; returns all timings and the last outputs."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    outputs: dict[str, object] = {}
    for _ in range(repeats):  # alternate, so a slow spell of the machine hits all paths
        for name, fn in paths.items():
            sync()
            t0 = time.perf_counter()
            outputs[name] = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times, outputs


def default_mode(args) -> None:
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
    all_same = True
    for threads in args.threads:
        torch.set_num_threads(threads)
        # Warm-up both paths (allocator, lazy init) on a few images: no first-call costs.
        beam_search_features(decoder, features[:4], beam_size=args.beam, max_len=args.max_len, **kw)
        for i in range(2):
            per_image_beam_search(decoder, features[i : i + 1], args.beam, args.max_len)
        times, out = time_alternating(
            {
                "batched": lambda: beam_search_features(
                    decoder, features, beam_size=args.beam, max_len=args.max_len, **kw
                ),
                "per-image": lambda: [
                    per_image_beam_search(decoder, features[i : i + 1], args.beam, args.max_len)
                    for i in range(features.shape[0])
                ],
                "copies": lambda: [
                    per_image_beam_search(
                        decoder, features[i : i + 1], args.beam, args.max_len, share=False
                    )
                    for i in range(features.shape[0])
                ],
            },
            args.repeats,
        )
        batched, loop = out["batched"], out["per-image"]
        t_batched, t_loop = times["batched"], times["per-image"]
        same = batched.token_lists() == loop
        all_same &= same
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
        best_c = min(times["copies"])
        same_c = out["copies"] == loop
        all_same &= same_c
        print(
            f"  (per-image with K feature copies, the reference before 2026-11-30: {best_c:.3f} s, "
            f"ratio {best_c / best_b:.1f}x, identical captions: {same_c})"
        )
    if not all_same:
        raise SystemExit("captions differ between batched and per-image beam search")


def paper_features(n: int, cells: int, dim: int, seed: int) -> torch.Tensor:
    """Random stand-ins for standardised encoder features ``[n, cells, dim]`` (seeded).

    Post-ReLU activations (sparse, non-negative, with a per-image offset per channel, so images
    differ in their mean annotation as real ones do), then standardised per channel over all
    cells of all images like the captioner's ``normalize`` (zero mean, unit variance).
    """
    gen = torch.Generator().manual_seed(seed)
    raw = torch.relu(
        torch.randn(n, cells, dim, generator=gen) + torch.randn(n, 1, dim, generator=gen)
    )
    mean = raw.mean(dim=(0, 1))
    std = raw.std(dim=(0, 1)).clamp_min(1e-6)
    return (raw - mean) / std


def calibrate_end_bias(out, mean_len, *, target, lo, hi, iters, tol):
    """Bisection on ``delta`` added to ``out.bias[END_ID]`` until ``mean_len()`` (the mean
    caption length of a search on the calibration images) is within ``tol`` of ``target`` (mean
    length falls as ``delta`` grows). Leaves the best ``delta`` found applied; returns it and
    the trace.
    """
    base = float(out.bias.detach()[END_ID])

    def length_at(delta: float) -> float:
        with torch.no_grad():
            out.bias[END_ID] = base + delta
        return mean_len()

    trace = []
    for delta in (lo, hi):
        trace.append((delta, length_at(delta)))
    if not trace[0][1] >= target >= trace[1][1]:
        raise SystemExit(f"--end-bias-range {lo} {hi} does not bracket length {target}: {trace}")
    best = min(trace, key=lambda dm: abs(dm[1] - target))
    for _ in range(iters):
        if abs(best[1] - target) <= tol:
            break
        mid = 0.5 * (lo + hi)
        m = length_at(mid)
        trace.append((mid, m))
        if abs(m - target) < abs(best[1] - target):
            best = (mid, m)
        if m > target:  # too long: make <end> likelier
            lo = mid
        else:
            hi = mid
    with torch.no_grad():
        out.bias[END_ID] = base + best[0]
    return best[0], trace


def paper_mode(args) -> None:
    from ica_captioning.model.decoder import AttentionDecoder
    from ica_captioning.params.conf import load_parameters

    conf = load_parameters()["train"]["decoder"]
    dims = PAPER_DIMS
    cells = args.grid * args.grid
    torch.manual_seed(args.seed)
    net = AttentionDecoder(
        vocab_size=args.vocab,
        feature_dim=dims["feature_dim"],
        embed_dim=dims["embed_dim"],
        hidden_dim=dims["hidden_dim"],
        attention_dim=dims["attention_dim"],
        dropout=float(conf["dropout"]),
        attention_init_scale=float(conf["attention_init_scale"]),
    ).eval()
    net = net.to(args.device)
    decoder = EndRiseDecoder(net, args.end_rise) if args.end_rise else net
    features = paper_features(args.images, cells, dims["feature_dim"], args.seed + 1)
    features = features.to(args.device)
    calib = paper_features(args.calib_images, cells, dims["feature_dim"], args.seed + 2)
    calib = calib.to(args.device)
    # A random decoder's 5000-way distribution is nearly flat (top word log p ~ -6.5). Scale the
    # output layer's weights (--sharpness) so the chosen words are about as probable as a trained
    # model's, then calibrate the <end> bias so captions end at realistic, varied lengths.
    with torch.no_grad():
        net.out.weight.mul_(args.sharpness)
    kw = dict(start_id=START_ID, end_id=END_ID, pad_id=PAD_ID, banned_ids=BANNED)
    beam, max_len = args.beam, args.max_len
    print(
        f"decoder: ica_captioning.model.decoder.AttentionDecoder, random init (seed {args.seed}), "
        f"D={dims['feature_dim']} E={dims['embed_dim']} H={dims['hidden_dim']} "
        f"A={dims['attention_dim']} L={cells} (grid {args.grid}) V={args.vocab}, "
        f"attention_init_scale={conf['attention_init_scale']} (conf/base), "
        f"output weights x{args.sharpness}, <end> logit rising {args.end_rise} per step"
    )
    print(
        f"features: {tuple(features.shape)} random post-ReLU, standardised per channel; "
        f"beam {beam}, at most {max_len} words, device {args.device}"
    )
    torch.set_num_threads(args.threads[0])
    t0 = time.perf_counter()
    bisection = dict(
        target=args.target_len,
        lo=args.end_bias_range[0],
        hi=args.end_bias_range[1],
        iters=args.calib_iters,
        tol=args.calib_tol,
    )

    def batched_len() -> float:
        res = beam_search_features(decoder, calib, beam_size=beam, max_len=max_len, **kw)
        return float(res.lengths.float().mean())

    delta, trace = calibrate_end_bias(net.out, batched_len, **bisection)
    print(
        f"<end> bias calibration on {args.calib_images} other images (batched search, "
        f"{time.perf_counter() - t0:.0f} s): delta {delta:+.3f} -> mean length "
        + ", ".join(f"{d:+.2f}:{m:.1f}" for d, m in trace)
    )
    # The tutorial's own model and per-image search (tutorial_reference.py): another model, so
    # its <end> bias is calibrated to the same mean length with its own search.
    torch.manual_seed(args.seed)
    tutorial = TutorialDecoder(
        vocab_size=args.vocab,
        feature_dim=dims["feature_dim"],
        embed_dim=dims["embed_dim"],
        hidden_dim=dims["hidden_dim"],
        attention_dim=dims["attention_dim"],
    ).eval()
    tutorial = tutorial.to(args.device)
    with torch.no_grad():
        tutorial.fc.weight.mul_(args.sharpness)

    def tutorial_search(i: int, images: torch.Tensor = features) -> list[int]:
        return tutorial_beam_search(
            tutorial, images[i : i + 1], beam, max_len, BANNED, args.end_rise
        )

    def tutorial_len() -> float:
        return statistics.fmean(len(tutorial_search(i, calib)) for i in range(len(calib)))

    t0 = time.perf_counter()
    delta, trace = calibrate_end_bias(tutorial.fc, tutorial_len, **bisection)
    print(
        f"tutorial model: <end> bias calibration (its per-image search, "
        f"{time.perf_counter() - t0:.0f} s): delta {delta:+.3f} -> mean length "
        + ", ".join(f"{d:+.2f}:{m:.1f}" for d, m in trace)
    )

    # Work done by each search (untimed): decoder steps and decoded rows, caption lengths.
    n = args.images
    labels = {
        "batched": "batched beam search",
        **({"compiled": "  same, compiled attention"} if args.compiled_attention else {}),
        "per-image": "per-image, same algorithm",
        "per-image-copies": "  same, K feature copies",
        "shrinking": "per-image, shrinking beam",
        "tutorial": "tutorial model, per-image",
    }
    per_image = {
        "per-image": lambda dec, i: per_image_beam_search(dec, features[i : i + 1], beam, max_len),
        "per-image-copies": lambda dec, i: per_image_beam_search(
            dec, features[i : i + 1], beam, max_len, share=False
        ),
        "shrinking": lambda dec, i: shrinking_beam_search(dec, features[i : i + 1], beam, max_len),
        # Its own model (the decoder argument is not used): captions differ from the others'.
        "tutorial": lambda dec, i: tutorial_search(i),
    }

    def batched(dec):
        return beam_search_features(dec, features, beam_size=beam, max_len=max_len, **kw)

    def batched_compiled(dec):  # the fast path's torch.compile kernel (evaluation.cpu_attention)
        with use_kernel("compiled"):
            return batched(dec)

    # Work done by each search (untimed): decoder steps and decoded rows, caption lengths.
    print("work per search (decoder steps, decoded rows) and caption lengths (words):")
    counted = {}
    for name in labels:
        cd = CountingDecoder(decoder)
        if name == "batched":
            res = batched(cd)
            caps = res.token_lists()
            per_token = float((res.scores / (res.lengths + 1).float()).mean())
        elif name == "compiled":
            res_c = batched_compiled(cd)
            caps = res_c.token_lists()
            print(
                f"  compiled attention vs tiled: max |score difference| "
                f"{float((res_c.scores - res.scores).abs().max()):.1e}, max |attention "
                f"difference| {float((res_c.alphas - res.alphas).abs().max()):.1e}"
            )
        else:
            caps = [per_image[name](cd, i) for i in range(n)]
        counted[name] = caps
        lens = [len(c) for c in caps]
        per = cd.searches
        steps = f"{cd.steps:4d} steps"
        if len(per) > 1:
            steps += f" ({statistics.fmean(per):.1f} per image, {min(per)}-{max(per)})"
        work = f"{steps}, {cd.rows:5d} rows ({cd.rows / n:5.1f} per image)"
        if name == "tutorial":
            work = "its own model and loop (not counted)"
        print(
            f"  {labels[name]:26s}: {work}; "
            f"length mean {statistics.fmean(lens):.1f}, sd {statistics.pstdev(lens):.1f}, "
            f"min {min(lens)}, max {max(lens)}, {sum(x == max_len for x in lens)} at the cap"
        )
    ref = counted["batched"]
    print(f"  batched caption lengths: {[len(c) for c in ref]}")
    print(
        f"  batched captions' mean log-probability per token (words and <end>): {per_token:.2f} "
        f"(p = {math.exp(per_token):.2f})"
    )

    best_by_threads: dict[int, dict[str, float]] = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        # Warm-up every path on a few images: no first-call costs in the timings.
        beam_search_features(decoder, features[:4], beam_size=beam, max_len=max_len, **kw)
        for fn in per_image.values():
            for i in range(2):
                fn(decoder, i)
        paths = {"batched": lambda: batched(decoder).token_lists()}
        if args.compiled_attention:
            batched_compiled(decoder)  # compiles (first use) outside the timings
            paths["compiled"] = lambda: batched_compiled(decoder).token_lists()
        for name, fn in per_image.items():
            paths[name] = lambda fn=fn: [fn(decoder, i) for i in range(n)]
        times, out = time_alternating(paths, args.repeats)
        best = {name: min(ts) for name, ts in times.items()}
        best_by_threads[threads] = best
        print(f"{n} images, {torch.get_num_threads()} CPU thread(s), best of {args.repeats}:")
        for name, t in best.items():
            agree = sum(a == b for a, b in zip(out[name], out["batched"]))
            agree = "n/a (another model)" if name == "tutorial" else f"{agree}/{n}"
            print(
                f"  {labels[name]:26s}: {t:7.3f} s ({n / t:6.1f} images/s), "
                f"{best['batched'] / t if name != 'batched' else 1:4.2f}x batched's throughput, "
                f"captions = batched {agree}; all {[round(x, 3) for x in times[name]]}"
            )
        print(
            f"  throughput ratio batched / per-image: {best['per-image'] / best['batched']:.2f}x "
            f"(K copies: {best['per-image-copies'] / best['batched']:.2f}x), "
            f"batched / shrinking: {best['shrinking'] / best['batched']:.2f}x, "
            f"batched / tutorial model: {best['tutorial'] / best['batched']:.2f}x; batched "
            f"captions unchanged from the counting run: {out['batched'] == ref}"
        )
        if args.compiled_attention:
            print(
                f"  compiled attention: {best['batched'] / best['compiled']:.2f}x the tiled "
                f"batched search; batched (compiled) / tutorial model: "
                f"{best['tutorial'] / best['compiled']:.2f}x, / per-image: "
                f"{best['per-image'] / best['compiled']:.2f}x"
            )
    if 1 in best_by_threads:
        for threads, best in best_by_threads.items():
            if threads != 1:
                scaling = ", ".join(
                    f"{name} {best_by_threads[1][name] / t:.2f}" for name, t in best.items()
                )
                print(f"thread scaling time(1 thread)/time({threads} threads): {scaling}")

    if args.overhead:
        # The same search (images, beam, every step to the cap) with a decoder so small that its
        # arithmetic is negligible: what is left is the search's bookkeeping and per-op dispatch,
        # the serial part that a second thread cannot speed up (an upper bound: no image ends).
        torch.manual_seed(args.seed)
        tiny = AttentionDecoder(
            vocab_size=50, feature_dim=8, embed_dim=8, hidden_dim=8, attention_dim=8,
            dropout=0.0, attention_init_scale=float(conf["attention_init_scale"]),
        ).eval().to(args.device)  # fmt: skip
        with torch.no_grad():
            tiny.out.bias[END_ID] -= 100.0  # never ends: max_len + 1 steps for every image
        small = torch.randn(n, 4, 8, device=args.device)
        for threads, best in best_by_threads.items():
            torch.set_num_threads(threads)
            beam_search_features(tiny, small, beam_size=beam, max_len=max_len, **kw)
            times, _ = time_alternating(
                {"tiny": lambda: beam_search_features(
                    tiny, small, beam_size=beam, max_len=max_len, **kw
                ).token_lists()},
                args.repeats,
            )  # fmt: skip
            t = min(times["tiny"])
            print(
                f"search overhead ({threads} thread(s)): the same {n}-image search with a "
                f"V=50, 8-d decoder takes {t * 1e3:.1f} ms = {100 * t / best['batched']:.1f} % "
                f"of the batched search"
            )

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        torch.set_num_threads(args.threads[0])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            beam_search_features(decoder, features, beam_size=beam, max_len=max_len, **kw)
            wall = time.perf_counter() - t0
        print(
            f"profile of one batched search ({args.images} images, {torch.get_num_threads()} "
            f"thread(s), {wall:.3f} s under the profiler), top ops by self CPU time:"
        )
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--paper-dims",
        action="store_true",
        help="the real AttentionDecoder at D=E=H=A=512, L=196, V=5000, 32 images, beam 5, "
        "max 19 words, calibrated caption lengths, plus the shrinking-beam reference",
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="torch CPU thread counts to time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings of each; best is kept")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--vocab", type=int, default=60)
    parser.add_argument("--grid", type=int, default=14, help="attention grid G (L = G*G)")
    parser.add_argument("--attention-dim", type=int, default=128, help="default mode")
    parser.add_argument("--hidden-dim", type=int, default=256, help="default mode")
    parser.add_argument("--sharpness", type=float, default=8.0, help="scale of output weights")
    parser.add_argument(
        "--end-bias", type=float, default=2.0, help="subtracted from <end> logit (default mode)"
    )
    paper = parser.add_argument_group("--paper-dims only")
    paper.add_argument("--seed", type=int, default=0)
    paper.add_argument("--target-len", type=float, default=8.0, help="mean caption length")
    paper.add_argument("--calib-images", type=int, default=16)
    paper.add_argument("--calib-iters", type=int, default=12)
    paper.add_argument("--calib-tol", type=float, default=0.25, help="words")
    paper.add_argument(
        "--end-bias-range", type=float, nargs=2, default=(-10.0, 30.0), metavar=("LO", "HI")
    )
    paper.add_argument(
        "--end-rise",
        type=float,
        default=0.0,
        help="added to the <end> logit per decoder step (0: the <end> bias alone)",
    )
    paper.add_argument(
        "--compiled-attention",
        action="store_true",
        help="also time the batched search with the compiled CPU attention kernel",
    )
    paper.add_argument(
        "--overhead",
        action="store_true",
        help="time the search's bookkeeping alone (the same search with a tiny decoder)",
    )
    paper.add_argument("--profile", action="store_true", help="torch.profiler of one search")
    paper.add_argument("--profile-rows", type=int, default=15)
    known, _ = parser.parse_known_args()
    if known.paper_dims:
        parser.set_defaults(**{k: v for k, v in PAPER_DIMS.items() if not k.endswith("_dim")})
    args = parser.parse_args()
    if args.paper_dims:
        paper_mode(args)
    else:
        default_mode(args)


if __name__ == "__main__":
    main()
