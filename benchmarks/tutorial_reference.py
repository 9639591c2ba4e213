"""The most-used public PyTorch Show-Attend-Tell implementation's computation, as a reference.

A re-implementation (this project's code) of what the "a-PyTorch-Tutorial-to-Image-Captioning"
``DecoderWithAttention``, its ``train.py`` step and its ``eval.py`` beam search compute, at the
same cost, for the speed comparisons of ``bench_beam_search.py --paper-dims`` and
``bench_train_step.py --paper-dims``:

* attention ``softmax(w·ReLU(W_e a + W_d h))`` with ``W_e a`` **recomputed at every step** and
  the context as an elementwise product summed over cells;
* gate ``σ(f_β(h))``, ``LSTMCell([E y; gated context])``, output ``fc(dropout(h))``;
* training: captions sorted by length, step ``t`` runs on the captions still longer than ``t``
  (``batch_size_t``), CE over the packed valid steps plus ``α_c·(1 − Σ_t α)²``, gradient clipping
  at 5, Adam;
* beam search of **one image at a time**: the image's features expanded to ``k`` rows, the
  ``k`` rows (all ``<start>``) decoded at step 1 with only row 0 used, and at every step the
  ``k`` live rows' states *and feature copies* gathered; a beam that emits ``<end>`` is set
  aside and ``k`` shrinks; the best complete sequence by raw log-probability wins (the integer
  index fix ``//`` applied).

It is a benchmark reference, not part of the package; it has no training-quality claims.
"""

from __future__ import annotations

import torch
from torch import nn

from ica_captioning.tokens import END_ID, PAD_ID, START_ID


class TutorialDecoder(nn.Module):
    """The tutorial's ``DecoderWithAttention`` (ReLU attention, no deep output)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int,
        hidden_dim: int,
        attention_dim: int,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.encoder_att = nn.Linear(feature_dim, attention_dim)
        self.decoder_att = nn.Linear(hidden_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.decode_step = nn.LSTMCell(embed_dim + feature_dim, hidden_dim, bias=True)
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        self.f_beta = nn.Linear(hidden_dim, feature_dim)
        self.fc = nn.Linear(hidden_dim, vocab_size)

    def attention(self, encoder_out: torch.Tensor, h: torch.Tensor):
        """``encoder_out [R, L, D]``, ``h [R, H]`` → ``(context [R, D], alpha [R, L])``."""
        att1 = self.encoder_att(encoder_out)  # [R, L, A], recomputed every step
        att2 = self.decoder_att(h)  # [R, A]
        att = self.full_att(torch.relu(att1 + att2.unsqueeze(1))).squeeze(2)  # [R, L]
        alpha = torch.softmax(att, dim=1)
        return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha

    def init_hidden_state(self, encoder_out: torch.Tensor):
        mean = encoder_out.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(self, encoder_out: torch.Tensor, tokens: torch.Tensor, h, c):
        """One step over ``R`` rows: ``(logits [R, V], alpha [R, L], h, c)`` (no dropout)."""
        context, alpha = self.attention(encoder_out, h)
        gated = torch.sigmoid(self.f_beta(h)) * context
        h, c = self.decode_step(torch.cat([self.embedding(tokens), gated], dim=1), (h, c))
        return self.fc(h), alpha, h, c

    def forward(self, encoder_out: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor):
        """Teacher forcing as the tutorial's training forward.

        Args:
            encoder_out: ``[B, L, D]``.
            captions: ``[B, S]`` ``[<start>, w…, <end>, <pad>…]``.
            lengths: ``[B]`` tokens per caption including ``<start>`` and ``<end>``.

        Returns:
            ``(predictions [B, T, V], captions sorted, decode_lengths, alphas [B, T, L])``.
        """
        lengths, order = lengths.sort(dim=0, descending=True)
        encoder_out, captions = encoder_out[order], captions[order]
        embeddings = self.embedding(captions)
        h, c = self.init_hidden_state(encoder_out)
        decode_lengths = (lengths - 1).tolist()
        steps = max(decode_lengths)
        b = encoder_out.shape[0]
        predictions = encoder_out.new_zeros(b, steps, self.vocab_size)
        alphas = encoder_out.new_zeros(b, steps, encoder_out.shape[1])
        for t in range(steps):
            bt = sum(n > t for n in decode_lengths)
            context, alpha = self.attention(encoder_out[:bt], h[:bt])
            gated = torch.sigmoid(self.f_beta(h[:bt])) * context
            h, c = self.decode_step(
                torch.cat([embeddings[:bt, t, :], gated], dim=1), (h[:bt], c[:bt])
            )
            predictions[:bt, t, :] = self.fc(self.dropout(h))
            alphas[:bt, t, :] = alpha
        return predictions, captions, decode_lengths, alphas


def tutorial_train_step(
    decoder: TutorialDecoder,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    captions: torch.Tensor,
    lengths: torch.Tensor,
    alpha_c: float = 1.0,
    grad_clip: float = 5.0,
) -> float:
    """One training step of the tutorial's ``train.py`` (features given: no encoder)."""
    predictions, sorted_caps, decode_lengths, alphas = decoder(features, captions, lengths)
    targets = sorted_caps[:, 1:]
    packed = torch.nn.utils.rnn.pack_padded_sequence
    scores = packed(predictions, decode_lengths, batch_first=True).data
    targets = packed(targets, decode_lengths, batch_first=True).data
    loss = nn.functional.cross_entropy(scores, targets)
    loss = loss + alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for group in optimizer.param_groups:  # the tutorial's clip_gradient: clamp each value
        for p in group["params"]:
            if p.grad is not None:
                p.grad.data.clamp_(-grad_clip, grad_clip)
    optimizer.step()
    return float(loss.detach())


@torch.inference_mode()
def tutorial_beam_search(
    decoder: TutorialDecoder,
    features: torch.Tensor,
    beam_size: int,
    max_len: int,
    banned: tuple[int, ...] = (),
    end_rise: float = 0.0,
) -> list[int]:
    """The tutorial's ``eval.py`` beam search of ONE image ``features [1, L, D]``.

    Stops when every beam has ended or after the step that may end a ``max_len``-word caption
    (the tutorial stops after 50 steps; the cap here matches the other searches). ``banned``
    tokens are never chosen and ``end_rise · t`` is added to the ``<end>`` logit of step ``t``
    (both as in ``bench_beam_search.py``'s other searches). Returns the words of the best
    complete sequence (the best live one if none completed).
    """
    k = beam_size
    vocab = decoder.vocab_size
    encoder_out = features.expand(k, *features.shape[1:])  # [k, L, D]
    prev = torch.full((k,), START_ID, dtype=torch.long, device=features.device)
    seqs = prev[:, None]
    top_scores = torch.zeros(k, 1, device=features.device)
    complete, complete_scores = [], []
    h, c = decoder.init_hidden_state(encoder_out)
    for t in range(max_len + 1):
        logits, _, h, c = decoder.step(encoder_out, prev, h, c)
        logits[:, END_ID] += end_rise * t
        scores = torch.log_softmax(logits, dim=1)
        if banned:
            scores[:, list(banned)] = float("-inf")
        scores = top_scores.expand_as(scores) + scores
        if t == 0:
            top_scores, top_words = scores[0].topk(k, 0, True, True)
        else:
            top_scores, top_words = scores.view(-1).topk(k, 0, True, True)
        prev_inds, next_words = top_words // vocab, top_words % vocab
        seqs = torch.cat([seqs[prev_inds], next_words[:, None]], dim=1)
        incomplete = [i for i, w in enumerate(next_words.tolist()) if w != END_ID]
        ended = sorted(set(range(len(next_words))) - set(incomplete))
        if ended:
            complete.extend(seqs[ended].tolist())
            complete_scores.extend(top_scores[ended].tolist())
        k -= len(ended)
        if k == 0 or t == max_len:
            break
        seqs = seqs[incomplete]
        keep = prev_inds[incomplete]
        h, c, encoder_out = h[keep], c[keep], encoder_out[keep]
        top_scores = top_scores[incomplete].unsqueeze(1)
        prev = next_words[incomplete]
    if complete:
        best = complete[max(range(len(complete)), key=complete_scores.__getitem__)]
    else:
        best = seqs[int(top_scores.view(-1).argmax())].tolist()
    return [w for w in best if w not in (START_ID, END_ID, PAD_ID)][:max_len]
