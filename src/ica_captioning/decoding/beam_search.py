"""Batched beam search over images *and* beams for any decoder of the protocol.

The decoder protocol (``docs/contracts.md``, :mod:`ica_captioning.model.protocol`)::

    state = decoder.init_state(features)                    # features [N, L, D]
    logits, alpha, state = decoder.step(features, tokens, state)
    # tokens [N] long -> logits [N, V], alpha [N, L] or [N, H, L], state (batch dim first)

A multi-head attention ``[N, H, L]`` is averaged over heads (one map per word).

Optionally the decoder lists ``image_state_slots``: it then accepts ``features [N, L, D]`` with
``tokens [N*K]`` (``K`` consecutive rows per image) and keeps those state slots at ``N`` rows.
Beam search uses that to share features and per-image state between the beams of an image.

All ``B`` images and their ``K`` beams are decoded together as one batch of ``B*K`` rows; the only
Python loop is over time steps. An image whose ``K`` beams have all finished leaves the rows (its
state and features are dropped), so the work per step follows the images still being decoded;
its hypotheses are kept exactly as the search would have left them. Hypotheses are ranked per
image with one ``topk`` over the ``K*V`` candidate continuations, states are reordered with
``index_select`` and the chosen caption is recovered from per-step backpointers at the end.

Length handling: a caption has at most ``max_len`` words followed by ``<end>``. At step
``max_len`` (the ``max_len + 1``-th decoder step) only ``<end>`` is allowed, so every returned
hypothesis is a complete sentence and its score is its true log-probability
``sum_t log p(w_t | w_<t, image)`` including the ``<end>`` token. A finished beam stays in the beam
with its score frozen (it continues with ``<pad>`` at zero cost), so it competes with the
unfinished ones until the end. The final choice among the ``K`` hypotheses of an image divides the
score by ``(number of words + 1) ** length_penalty`` (``+1`` counts ``<end>``); ``length_penalty=0``
(the default) ranks by the raw log-probability, which makes beam search with a beam wide enough to
hold every sequence identical to exhaustive search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ica_captioning.model.protocol import CaptionDecoder, step_attention
from ica_captioning.tokens import PAD_ID

#: What beam search needs from a decoder: the decoder protocol (``docs/contracts.md``).
StepDecoder = CaptionDecoder


@dataclass(frozen=True)
class BeamSearchOutput:
    """The best caption of every image.

    Attributes:
        tokens: ``[B, T]`` long, word ids of the chosen caption (no ``<start>``/``<end>``),
            padded with ``pad_id`` after ``lengths[b]`` words; ``T = max(lengths)`` (at least 1
            column, so an all-empty batch still has a well-formed tensor).
        lengths: ``[B]`` long, number of words of each caption.
        scores: ``[B]`` float, log-probability of the caption including its ``<end>`` token.
        alphas: ``[B, T, L]`` float, attention map of the decoder step that predicted each word
            (contract alignment: word ``i`` <- step ``i``); zeros after ``lengths[b]``.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    alphas: Tensor

    def token_lists(self) -> list[list[int]]:
        """The captions as Python lists of word ids (length ``lengths[b]`` each)."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist())]


def _check_ids(vocab_size: int, **ids: int) -> None:
    for name, value in ids.items():
        if not 0 <= value < vocab_size:
            raise ValueError(f"{name}={value} is outside the vocabulary of size {vocab_size}")


@torch.inference_mode()
def beam_search_features(
    decoder: StepDecoder,
    features: Tensor,
    *,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    pad_id: int = PAD_ID,
    banned_ids: Iterable[int] = (),
    length_penalty: float = 0.0,
) -> BeamSearchOutput:
    """Beam search for a batch of encoded images.

    Args:
        decoder: object with ``init_state`` and ``step`` (the contract's ``model.decoder``).
        features: ``[B, L, D]`` encoder features of ``B`` images.
        beam_size: ``K >= 1``; ``1`` is greedy decoding.
        max_len: maximum number of words per caption (``>= 0``); ``<end>`` is forced after it.
        start_id: id of ``<start>`` (the first decoder input).
        end_id: id of ``<end>``.
        pad_id: id written after the end of a caption (and the zero-cost continuation of a
            finished beam).
        banned_ids: ids never generated as words (e.g. ``<pad>``, ``<start>``, ``<unk>``).
            ``end_id`` cannot be banned.
        length_penalty: exponent ``a`` of the final ranking ``score / (words + 1) ** a``.

    Returns:
        The best hypothesis per image, see :class:`BeamSearchOutput`.

    Raises:
        ValueError: bad shapes, sizes or ids.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [B, L, D], got shape {tuple(features.shape)}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if max_len < 0:
        raise ValueError(f"max_len must be >= 0, got {max_len}")
    banned = sorted(set(int(i) for i in banned_ids))
    if end_id in banned:
        raise ValueError(f"end_id={end_id} cannot be banned: captions could never end")

    batch, num_cells, _ = features.shape
    k = beam_size
    device = features.device
    if batch == 0:
        return BeamSearchOutput(
            tokens=torch.full((0, 1), pad_id, dtype=torch.long, device=device),
            lengths=torch.zeros(0, dtype=torch.long, device=device),
            scores=torch.zeros(0, device=device),
            alphas=torch.zeros(0, 1, num_cells, device=device),
        )

    # Step 0 runs on B rows (all K beams of an image are the same empty prefix); from step 1 on
    # rows are image-major: row b*K + j is beam j of image b.
    state = tuple(decoder.init_state(features))  # batch B
    # A decoder that takes features once per image for K consecutive rows names its per-image
    # state slots (``image_state_slots``): those stay at B rows and the features are not copied
    # K times, so each step reads [B, L, ·] instead of [B*K, L, ·] (docs/contracts.md).
    grouped = getattr(decoder, "image_state_slots", None) is not None
    image_slots = _image_state_slots(decoder, len(state))
    feats = features  # [B, L, D]; [B*K, L, D] after step 0 unless grouped
    inputs = torch.full((batch,), start_id, dtype=torch.long, device=device)  # [B]
    width = 1  # live beams per image in the current rows: 1 at step 0, K afterwards
    # A state slot is "shared" while it is identical for all beams of an image: true for every
    # slot right after the step-0 expansion, and kept while ``step`` hands the same tensor back
    # (e.g. the decoder's projected annotations). Reordering beams within an image is a no-op
    # on such a slot, so its per-step index_select (a copy of [B*K, L, A]) is skipped.
    shared = [False] * len(state)

    neg_inf = float("-inf")
    # Hypotheses of every image ([B, width]; the rows of images that left stay frozen here).
    scores = torch.zeros(batch, 1, device=device)  # [B, width] log-probability so far
    finished = torch.zeros(batch, 1, dtype=torch.bool, device=device)  # [B, width]
    lengths = torch.zeros(batch, 1, dtype=torch.long, device=device)  # [B, width] words so far
    # Images still decoded. An image whose K beams have all finished leaves the decoder's rows:
    # its hypotheses can no longer change (a finished beam continues with <pad> at zero cost, so
    # the search keeps it in place), and its later steps are recorded as exactly that.
    active = torch.arange(batch, device=device)  # [A] image of each group of rows
    keep_beams = torch.arange(k, device=device).expand(batch, k)  # [B, K] "beam j stays j"

    backpointers: list[Tensor] = []  # per step [B, K]: source beam of each new beam
    step_tokens: list[Tensor] = []  # per step [B, K]: token chosen
    step_alphas: list[Tensor] = []  # per step [B, K, L]: attention of the step that chose it
    finished_row: Tensor | None = None
    vocab = 0
    for t in range(max_len + 1):
        n_act = active.shape[0]
        rows_in = n_act * width
        logits, alpha, new_state = decoder.step(feats, inputs, state)
        alpha = step_attention(alpha)  # [R, L] (a multi-head decoder's [R, H, L] head-averaged)
        if t == 0:
            vocab = logits.shape[-1]
            _check_ids(vocab, start_id=start_id, end_id=end_id, pad_id=pad_id)
            for i in banned:
                _check_ids(vocab, banned_id=i)
            # A finished beam continues with <pad> at zero cost: its score stays frozen.
            finished_row = torch.full((vocab,), neg_inf, device=device)
            finished_row[pad_id] = 0.0
        if logits.shape != (rows_in, vocab) or alpha.shape != (rows_in, num_cells):
            raise ValueError(
                f"decoder.step returned logits {tuple(logits.shape)} and alpha "
                f"{tuple(alpha.shape)}; expected {(rows_in, vocab)} and {(rows_in, num_cells)}"
            )
        shared = [sh and new is old for sh, new, old in zip(shared, new_state, state)]
        logp = torch.log_softmax(logits.float(), dim=-1)  # [A*width, V]
        if banned:
            logp[:, banned] = neg_inf
        if t == max_len:
            # Last step: only <end> may follow max_len words.
            end_logp = logp[:, end_id].clone()
            logp.fill_(neg_inf)
            logp[:, end_id] = end_logp
        logp = logp.view(n_act, width, vocab)
        all_rows = n_act == batch
        act_scores = scores if all_rows else scores[active]  # [A, width]
        act_finished = finished if all_rows else finished[active]
        # Dead beams (score -inf: fewer live candidates than K) are treated as finished.
        done = act_finished | torch.isinf(act_scores)  # [A, width]
        logp = torch.where(done.unsqueeze(-1), finished_row, logp)  # [A, width, V]

        candidates = (act_scores.unsqueeze(-1) + logp).view(n_act, width * vocab)  # [A, width*V]
        if width * vocab < k:  # tiny vocabulary at step 0: pad with dead candidates
            filler = candidates.new_full((n_act, k - width * vocab), neg_inf)
            candidates = torch.cat([candidates, filler], dim=1)
        new_scores, flat_idx = candidates.topk(k, dim=1)  # [A, K]
        # Filler candidates (index >= width*V) become dead beams of source 0 with token <pad>.
        src = torch.div(flat_idx, vocab, rounding_mode="floor").clamp_(max=width - 1)  # [A, K]
        tokens = torch.where(flat_idx < width * vocab, flat_idx % vocab, pad_id)  # [A, K]

        rows = (torch.arange(n_act, device=device).unsqueeze(1) * width + src).view(-1)  # [A*K]
        if t == 0:
            if not grouped:
                feats = features.repeat_interleave(k, dim=0)  # [B*K, L, D]
            state = tuple(
                s if i in image_slots else s.index_select(0, rows) for i, s in enumerate(new_state)
            )
            shared = [True] * len(state)
        else:
            state = tuple(
                s if sh or i in image_slots else s.index_select(0, rows)
                for i, (s, sh) in enumerate(zip(new_state, shared))
            )
        prev_done = done.gather(1, src)  # [A, K]
        act_lengths = (lengths if all_rows else lengths[active]).gather(1, src)
        act_lengths = act_lengths + (~prev_done & (tokens != end_id)).long()
        act_finished = prev_done | (tokens == end_id)
        act_alpha = alpha.reshape(n_act, width, num_cells).gather(1, _expand(src, num_cells))

        if all_rows:  # every image is active (always at step 0: [B, 1] tables become [B, K])
            scores, finished, lengths = new_scores, act_finished, act_lengths
            backpointers.append(src)
            step_tokens.append(tokens)
            step_alphas.append(act_alpha)
        else:
            scores[active], finished[active], lengths[active] = (
                new_scores, act_finished, act_lengths,
            )  # fmt: skip
            backpointers.append(keep_beams.index_put((active,), src))
            step_tokens.append(tokens.new_full((batch, k), pad_id).index_put((active,), tokens))
            step_alphas.append(
                act_alpha.new_zeros(batch, k, num_cells).index_put((active,), act_alpha)
            )
        inputs = tokens.view(-1)
        width = k
        over = (act_finished | torch.isinf(new_scores)).all(dim=1)  # [A] images now complete
        if bool(over.all()):
            break
        if bool(over.any()):
            # Their rows leave: the decoder's rows, state and features shrink to the others.
            stay = (~over).nonzero().squeeze(1)  # [A']
            stay_rows = (stay.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
            active = active.index_select(0, stay)
            inputs = inputs.index_select(0, stay_rows)
            state = tuple(
                s.index_select(0, stay if i in image_slots else stay_rows)
                for i, s in enumerate(state)
            )
            feats = feats.index_select(0, stay if grouped else stay_rows)

    # Final ranking among the K hypotheses of each image.
    ranked = scores / (lengths + 1).float().pow(length_penalty)  # [B, K]
    best = ranked.argmax(dim=1)  # [B]
    best_scores = scores.gather(1, best.unsqueeze(1)).squeeze(1)  # [B]
    best_lengths = lengths.gather(1, best.unsqueeze(1)).squeeze(1)  # [B]

    # Backtrack through the backpointers: one vectorised gather per step.
    num_steps = len(step_tokens)
    out_tokens = torch.empty(batch, num_steps, dtype=torch.long, device=device)
    out_alphas = torch.empty(batch, num_steps, num_cells, device=device)
    beam = best.unsqueeze(1)  # [B, 1]
    for t in range(num_steps - 1, -1, -1):
        out_tokens[:, t] = step_tokens[t].gather(1, beam).squeeze(1)
        out_alphas[:, t] = step_alphas[t].gather(1, _expand(beam, num_cells)).squeeze(1).float()
        beam = backpointers[t].gather(1, beam)

    width = max(int(best_lengths.max()), 1)
    positions = torch.arange(width, device=device).unsqueeze(0)  # [1, T]
    is_word = positions < best_lengths.unsqueeze(1)  # [B, T]
    tokens_out = torch.where(is_word, _fit(out_tokens, width, pad_id), pad_id)
    alphas_out = _fit(out_alphas, width, 0.0) * is_word.unsqueeze(-1)
    return BeamSearchOutput(
        tokens=tokens_out, lengths=best_lengths, scores=best_scores, alphas=alphas_out
    )


def _image_state_slots(decoder: StepDecoder, num_slots: int) -> frozenset[int]:
    """The decoder's per-image state slots (none if it wants one feature row per row)."""
    slots = frozenset(int(i) for i in getattr(decoder, "image_state_slots", None) or ())
    if any(not 0 <= i < num_slots for i in slots):
        raise ValueError(
            f"decoder.image_state_slots={sorted(slots)} names slots outside its state of "
            f"{num_slots} tensors"
        )
    return slots


def _expand(index: Tensor, size: int) -> Tensor:
    """``[B, K]`` -> ``[B, K, size]`` index for gathering along dim 1 of a ``[B, K, size]``."""
    return index.unsqueeze(-1).expand(*index.shape, size)


def _fit(x: Tensor, width: int, fill: float) -> Tensor:
    """Crop or right-pad ``x`` ``[B, S, ...]`` along dim 1 to ``width`` columns."""
    if x.shape[1] >= width:
        return x[:, :width]
    pad = x.new_full((x.shape[0], width - x.shape[1], *x.shape[2:]), fill)
    return torch.cat([x, pad], dim=1)


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.inference_mode()
def beam_search(
    model: Any,
    images: Tensor,
    *,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    pad_id: int = PAD_ID,
    banned_ids: Sequence[int] = (),
    length_penalty: float = 0.0,
    batch_size: int = 64,
) -> BeamSearchOutput:
    """Encode ``images`` and beam-search their captions, ``batch_size`` images at a time.

    Args:
        model: captioner with ``encode(images [B, 3, H, W]) -> features [B, L, D]`` and
            ``decoder`` (contract interface). Put into eval mode.
        images: ``[N, 3, H, W]`` float, ImageNet-normalised.
        beam_size: see :func:`beam_search_features`.
        max_len: see :func:`beam_search_features`.
        start_id: see :func:`beam_search_features`.
        end_id: see :func:`beam_search_features`.
        pad_id: see :func:`beam_search_features`.
        banned_ids: see :func:`beam_search_features`.
        length_penalty: see :func:`beam_search_features`.
        batch_size: images per chunk (bounds memory: ``batch_size * beam_size`` decoder rows).

    Returns:
        :class:`BeamSearchOutput` for all ``N`` images (chunks padded to a common length).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [N, 3, H, W], got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if hasattr(model, "eval"):
        model.eval()
    device = _model_device(model)
    parts = []
    for lo in range(0, images.shape[0], batch_size):
        features = model.encode(images[lo : lo + batch_size].to(device))  # [b, L, D]
        parts.append(
            beam_search_features(
                model.decoder,
                features,
                beam_size=beam_size,
                max_len=max_len,
                start_id=start_id,
                end_id=end_id,
                pad_id=pad_id,
                banned_ids=banned_ids,
                length_penalty=length_penalty,
            )
        )
    return concat_outputs(parts, pad_id=pad_id)


def concat_outputs(parts: Sequence[BeamSearchOutput], pad_id: int = PAD_ID) -> BeamSearchOutput:
    """Concatenate chunk outputs along the batch, padding to the longest caption."""
    if not parts:
        raise ValueError("no beam-search outputs to concatenate")
    width = max(p.tokens.shape[1] for p in parts)
    return BeamSearchOutput(
        tokens=torch.cat([_fit(p.tokens, width, pad_id) for p in parts]),
        lengths=torch.cat([p.lengths for p in parts]),
        scores=torch.cat([p.scores for p in parts]),
        alphas=torch.cat([_fit(p.alphas, width, 0.0) for p in parts]),
    )
