"""Soft-attention LSTM decoder of Show, Attend and Tell (Xu et al. 2015).

Per step ``t`` (input token ``y_{t-1}``, previous state ``h_{t-1}, c_{t-1}``):

* additive attention ``e_{tl} = w·tanh(W_a a_l + U_a h_{t-1})``, ``α_t = softmax_l(e_t)``;
* gated context ``ẑ_t = β_t Σ_l α_{tl} a_l`` with the scalar gate ``β_t = σ(f_β(h_{t-1}))``;
* LSTM update on ``[E y_{t-1}; ẑ_t]``;
* deep output ``p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z ẑ_t))`` with dropout before ``L_o``.

``h_0, c_0`` are affine maps of the mean annotation vector. Step ``t`` of a caption
``[<start>, w_0, …, w_{n-1}, <end>]`` takes ``ids[t]`` and predicts ``ids[t + 1]``, so the
attention map of step ``i`` is the one that belongs to word ``w_i`` (docs/design.md, alignment).

The attention is computed as ``softmax_l(2·w·σ(2·W_a a_l + 2·U_a h))``, the same function as
the ``tanh`` form (``tanh x = 2σ(2x) − 1``; the constant ``−Σw`` cancels in the softmax) and
faster on CPU. CPU inference takes a further fast path of the same function,
:mod:`ica_captioning.model.cpu_attention`.
"""

from __future__ import annotations

import torch
from torch import nn

from ica_captioning.model import cpu_attention
from ica_captioning.model.protocol import longest_first
from ica_captioning.tokens import END_ID, PAD_ID

#: Decoder state ``(h [R, H], c [R, H], projected [N, L, A], exp_projected [N, L, A] or [N, 0, 0])``
#: for ``R = N·K`` rows over ``N`` images (``K`` consecutive rows per image, e.g. beams; ``K = 1``
#: in training). ``projected = W_a a`` is carried so that ``step`` does not recompute it;
#: ``exp_projected = exp(−2 W_a a)`` feeds the CPU inference fast path of the attention
#: (:mod:`~ica_captioning.model.cpu_attention`; empty where that path is off). Every tensor
#: has its batch dimension first.
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class AttentionDecoder(nn.Module):
    """Show-Attend-Tell decoder.

    Rows and images: ``step`` decodes ``R = N·K`` rows for ``N`` images, rows ``n·K … n·K + K − 1``
    belonging to image ``n``. ``features`` and the projected annotations (the state slots listed
    in :attr:`image_state_slots`) are given once per image, so the ``K`` beams of an image share
    them instead of ``K`` copies: beam search over ``B`` images touches ``[B, L, ·]``, not
    ``[B·K, L, ·]``, per step. Training and greedy decoding use ``K = 1``.

    Args:
        vocab_size: V, size of the output vocabulary (index ``PAD_ID`` is ``<pad>``).
        feature_dim: D, channels of the annotation vectors.
        embed_dim: E, word-embedding size (also the deep-output size).
        hidden_dim: H, LSTM hidden size.
        attention_dim: A, hidden size of the additive attention.
        dropout: dropout probability before the output layer.
        attention_init_scale: factor on the default initialisation of the attention's output
            layer (an inverse temperature). With the default init (1) the attention starts
            almost uniform, where every Lovász-hinge error ties and the ICA loss has no useful
            gradient: attention stays uniform (measured). 10 starts it peaked enough to learn.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        feature_dim: int,
        embed_dim: int,
        hidden_dim: int,
        attention_dim: int,
        dropout: float,
        attention_init_scale: float,
    ) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        self.att_features = nn.Linear(feature_dim, attention_dim)
        self.att_hidden = nn.Linear(hidden_dim, attention_dim)
        # No bias: softmax is shift-invariant, so a bias would get only round-off gradients
        # (which Adam would amplify into arbitrary updates).
        self.att_score = nn.Linear(attention_dim, 1, bias=False)
        with torch.no_grad():
            self.att_score.weight.mul_(float(attention_init_scale))
        self.gate = nn.Linear(hidden_dim, 1)
        self.lstm = nn.LSTMCell(embed_dim + feature_dim, hidden_dim)
        self.out_hidden = nn.Linear(hidden_dim, embed_dim)
        self.out_context = nn.Linear(feature_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(embed_dim, vocab_size)

    #: State slots indexed by image, not by row (``projected``, ``exp_projected``); the others
    #: have one entry per row. Beam search keeps these at ``N`` rows and never reorders them.
    image_state_slots: tuple[int, ...] = (2, 3)

    def init_state(self, features: torch.Tensor) -> State:
        """Initial state from the mean annotation vector.

        Args:
            features: ``[N, L, D]`` annotation vectors.

        Returns:
            ``(h [N, H], c [N, H], projected [N, L, A], exp_projected)`` (see :data:`State`).
        """
        mean = features.mean(dim=1)  # [N, D]
        projected = self.att_features(features)  # [N, L, A]
        exp_projected = cpu_attention.exp_memory(projected)  # [N, L, A] or [N, 0, 0]
        return self.init_h(mean), self.init_c(mean), projected, exp_projected

    def attend(
        self,
        features: torch.Tensor,
        projected: torch.Tensor,
        exp_projected: torch.Tensor,
        h: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive attention ``α = softmax_l(w·tanh(W_a a_l + U_a h))``, as ``2·w·σ(2·…)``.

        Args:
            features: ``[N, L, D]``.
            projected: ``[N, L, A]`` = ``W_a features``.
            exp_projected: ``[N, L, A]`` = ``exp(−2·projected)``, or ``[N, 0, 0]`` (no fast path).
            h: ``[N·K, H]`` previous hidden state, ``K`` consecutive rows per image.

        Returns:
            ``(context [N·K, D], alpha [N·K, L])``; ``alpha`` sums to 1 over ``L``.
        """
        n, num_cells, dim = features.shape
        k = h.shape[0] // n if n else 1
        query = self.att_hidden(h).view(n, k, 1, -1)  # [N, K, 1, A] = U_a h
        if cpu_attention.applies(query):
            scores = cpu_attention.attention_scores(
                query, projected, exp_projected, self.att_score.weight, attention_activation
            )  # [N, K, L]
        else:
            scores = 2.0 * self.att_score(attention_activation(query, projected)).squeeze(-1)
        alpha = torch.softmax(scores.float(), dim=-1).to(features.dtype)  # [N, K, L]
        context = torch.bmm(alpha, features)  # [N, K, D]
        return context.view(n * k, dim), alpha.view(n * k, num_cells)

    def step(
        self, features: torch.Tensor, tokens: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One decoding step.

        Args:
            features: ``[N, L, D]`` annotation vectors.
            tokens: ``[N·K]`` long, the input tokens ``y_{t-1}`` (``K ≥ 1`` rows per image).
            state: state from :meth:`init_state` (``K = 1``) or the previous step; beam search
                repeats the row slots ``h, c`` ``K`` times per image.

        Returns:
            ``(logits [N·K, V], alpha [N·K, L], new state)``.

        Raises:
            ValueError: rows that are not a multiple of the images, or state of the wrong size.
        """
        h, c, projected, exp_projected = state
        n, rows = features.shape[0], tokens.shape[0]
        bad_rows = rows % n if n else rows
        if (
            bad_rows
            or h.shape[0] != rows
            or c.shape[0] != rows
            or len(projected) != n
            or len(exp_projected) != n
        ):
            raise ValueError(
                f"decoder.step: tokens [{rows}], h {tuple(h.shape)}, c {tuple(c.shape)} must have "
                f"N·K rows for features {tuple(features.shape)} (N images), and the projected "
                f"annotations {tuple(projected.shape)}, {tuple(exp_projected.shape)} N rows"
            )
        emb = self.embedding(tokens)  # [R, E]
        h, c, gated, alpha = self._recur(features, emb, state)
        return self._emit(emb, h, gated), alpha, (h, c, projected, exp_projected)

    def _recur(
        self, features: torch.Tensor, emb: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The part of a step that the next step depends on: attention, gate, LSTM update.

        Args:
            features: ``[N, L, D]`` annotation vectors.
            emb: ``[R, E]`` embedded input tokens.
            state: see :data:`State`.

        Returns:
            ``(h [R, H], c [R, H], gated [R, D], alpha [R, L])``, the new ``h, c``, the gated
            context ``ẑ_t`` and the attention.
        """
        h, c, projected, exp_projected = state
        context, alpha = self.attend(features, projected, exp_projected, h)  # [R, D], [R, L]
        gated = torch.sigmoid(self.gate(h)) * context  # [R, D]
        h, c = self.lstm(torch.cat([emb, gated], dim=1), (h, c))
        return h, c, gated, alpha

    def _emit(self, emb: torch.Tensor, h: torch.Tensor, gated: torch.Tensor) -> torch.Tensor:
        """Deep output ``L_o(E y_{t-1} + L_h h_t + L_z ẑ_t)`` (dropout before ``L_o``): logits.

        Nothing of it feeds back into the recurrence, so teacher forcing applies it once to
        every step's rows together (``[..., E]``, ``[..., H]``, ``[..., D]`` → ``[..., V]``).
        """
        deep = emb + self.out_hidden(h) + self.out_context(gated)  # [..., E]
        return self.out(self.dropout(deep))  # [..., V]

    def forward(
        self, features: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoding.

        Two savings over running :meth:`step` on every row, both exact (test:
        ``tests/model/test_decoder_forward.py``):

        * A step whose input is ``<pad>`` or ``<end>`` predicts padding, which every loss and
          metric masks out, so it is not computed: captions are decoded longest first and step
          ``t`` runs only on those whose input at ``t`` is still ``<start>`` or a word (a prefix
          of the sorted batch, sliced as views), as the Show-Attend-Tell reference
          implementations do. The skipped steps come back as zeros.
        * The deep output and the output layer (:meth:`_emit`) do not feed back into the
          recurrence, so the loop runs only attention, gate and LSTM, and the output layer is
          applied once to the rows of all steps: one large matrix product and one gradient for
          ``L_o`` instead of one per step (and one ``[B, V]`` copy per step).

        Args:
            features: ``[B, L, D]`` annotation vectors.
            inputs: ``[B, T]`` long input tokens (``ids[:, :-1]``; after a caption's ``<end>``
                only ``<pad>``).

        Returns:
            ``(logits [B, T, V], alphas [B, T, L])``, zero at the skipped steps.
        """
        b, steps = inputs.shape
        if b == 0 or steps == 0:  # nothing to decode: well-formed empty outputs
            zeros = features.new_zeros
            return zeros(b, steps, self.vocab_size), zeros(b, steps, features.shape[1])
        stop = (inputs == PAD_ID) | (inputs == END_ID)  # [B, T]
        # Steps each caption needs: up to its first <pad>/<end> input (all T without one).
        needed = torch.where(stop.any(dim=1), stop.int().argmax(dim=1), steps)  # [B]
        order, active_rows = longest_first(needed, steps)
        feats = features.index_select(0, order)  # [B, L, D]
        emb = self.embedding(inputs.index_select(0, order))  # [B, T, E]
        h, c, projected, exp_projected = self.init_state(feats)
        sizes = [n for n in active_rows if n > 0]  # rows of each step that runs
        feats_at, projected_at = prefixes(feats, sizes), prefixes(projected, sizes)
        hs, gates, alphas = [], [], []  # per step t: [active_t, ·], the sorted prefix
        for t, active in enumerate(sizes):
            state = (h[:active], c[:active], projected_at[t], exp_projected[:active])
            h, c, gated, alpha = self._recur(feats_at[t], emb[:active, t], state)
            hs.append(h)
            gates.append(gated)
            alphas.append(alpha)
        # Packed rows, step-major: step t holds sorted captions 0 … active_t − 1.
        counts = torch.tensor(sizes, device=inputs.device)  # [T']
        step_of = torch.repeat_interleave(torch.arange(len(hs), device=inputs.device), counts)
        starts = torch.cumsum(counts, 0) - counts  # [T'] first packed row of each step
        row_of = torch.arange(len(step_of), device=inputs.device) - starts[step_of]  # [P]
        logits = self._emit(emb[row_of, step_of], torch.cat(hs), torch.cat(gates))  # [P, V]
        # Back to [B, T, ·] in the callers' order, zeros at the skipped steps.
        caption = order[row_of]  # [P] original row of each packed row
        out_logits = logits.new_zeros(b, steps, logits.shape[-1]).index_put(
            (caption, step_of), logits
        )
        alpha_cat = torch.cat(alphas)  # [P, L]
        out_alphas = alpha_cat.new_zeros(b, steps, alpha_cat.shape[-1]).index_put(
            (caption, step_of), alpha_cat
        )
        return out_logits, out_alphas


def prefixes(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The views ``x[:n]`` for every ``n`` in ``sizes``, with one gradient buffer for all.

    Autograd's backward of a slice ``x[:n]`` fills a zero tensor of ``x``'s full shape and adds
    it into ``x``'s gradient, once per slice: for the decoder's ``[B, L, ·]`` annotations over
    ~15 steps that was ~10 % of a paper-size training step (``aten::fill_``). Here the slices'
    gradients are added into one buffer, each into its own prefix.
    """
    if not x.requires_grad:
        return [x[:n] for n in sizes]
    return list(_Prefixes.apply(x, tuple(sizes)))


class _Prefixes(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        ctx.shape, ctx.sizes = x.shape, sizes
        return tuple(x[:n] for n in sizes)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        out = None
        for n, g in zip(ctx.sizes, grads):
            if g is None:
                continue
            if out is None:
                out = g.new_zeros(ctx.shape)
            out[:n] += g
        return out, None


def attention_activation(query: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """``σ(2·W_a a + 2·U_a h)`` ``[N, K, L, A]`` from ``query [N, K, 1, A]`` = ``U_a h``.

    In place: autograd keeps σ's output either way; one ``[N, K, L, A]`` buffer, not two.
    """
    return torch.add(2.0 * query, projected.unsqueeze(1), alpha=2.0).sigmoid_()
