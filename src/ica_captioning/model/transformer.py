"""A pre-LayerNorm Transformer caption decoder over the grid annotations.

It runs over the same ``[B, L, D]`` annotation vectors (``L = G²`` cells, row-major) as the
Show-Attend-Tell decoder and implements the decoder protocol
(:class:`~ica_captioning.model.protocol.CaptionDecoder`, docs/contracts.md), so beam search,
greedy decoding, teacher-forced attention and the figures use it unchanged.

Architecture:

* **Memory.** ``features [B, L, D]`` → ``Linear(D, d_model)`` + a fixed 2-D sinusoidal encoding
  of the cell (row sinusoids in the first ``d_model / 2`` channels, column sinusoids in the
  other half) → dropout → ``encoder_layers`` pre-LN Transformer encoder layers (self-attention
  over the cells; 0 layers is allowed) → LayerNorm.
* **Words.** ``√d_model · E[token]`` + a fixed 1-D sinusoidal encoding of the position
  (``max_len`` positions) → dropout.
* **Decoder blocks** (``num_layers``, pre-LN): ``x += SelfAttn(LN(x))`` (causal),
  ``x += CrossAttn(LN(x), memory)``, ``x += FF(LN(x))``; dropout on each residual branch and
  inside the feed-forward. Then a final LayerNorm and the output projection (its weight is the
  embedding matrix when ``tie_embeddings``).

The cross-attention is written out (not ``nn.MultiheadAttention``) because its probabilities,
per layer and head, are the attention maps the ICA loss supervises. There is no dropout on the
attention probabilities, so the returned maps are exactly the ones that weight the values.

Shapes: ``B`` captions, ``N`` images, ``R = N·K`` decoder rows, ``T`` steps, ``L = G²`` cells,
``D`` annotation channels, ``V`` words, ``Λ = num_layers``, ``H = num_heads``,
``d_h = d_model / H``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ica_captioning.model.transformer_layers import (
    DecoderLayer,
    EncoderLayer,
    grid_positional_encoding,
    sinusoidal_encoding,
)

__all__ = [
    "TransformerDecoder",
    "grid_positional_encoding",
    "protocol_attention",
    "select_attention",
    "sinusoidal_encoding",
]

#: Layer selection of :func:`select_attention`: the last layer, all layers, or layer indices.
LayerSelection = Literal["last", "all"] | Sequence[int]
#: Head selection of :func:`select_attention`: all heads or head indices.
HeadSelection = Literal["all"] | Sequence[int]

#: Decoder state (every tensor batch-dimension first):
#: ``(position [R] long, self_k [R, Λ, H, t, d_h], self_v [R, Λ, H, t, d_h],
#: memory [N, L, d_model], cross_k [N, Λ, H, L, d_h], cross_v [N, Λ, H, L, d_h])``.
#: ``position`` is the number of tokens already decoded (the position of the next input token);
#: ``self_k``/``self_v`` are the self-attention keys and values of those ``t`` tokens per layer
#: (grown by one along dim 3 per step); ``memory`` and the cross-attention keys and values are
#: computed once by ``init_state`` and are per image (:attr:`TransformerDecoder.image_state_slots`).
State = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _indices(selection: object, size: int, what: str) -> list[int]:
    """Normalise a layer/head selection to a list of indices in ``[0, size)``."""
    if isinstance(selection, str):
        if selection == "all":
            return list(range(size))
        if selection == "last" and what == "layers":
            return [size - 1]
        raise ValueError(f"unknown {what} selection {selection!r}")
    if not isinstance(selection, Sequence):
        raise ValueError(f"{what} must be a name or a list of indices, got {selection!r}")
    out = []
    for i in selection:
        if isinstance(i, bool) or not isinstance(i, int) or not -size <= i < size:
            raise ValueError(f"{what} index {i!r} is outside 0..{size - 1}")
        out.append(i % size)
    if not out:
        raise ValueError(f"select at least one of the {what}")
    return out


def select_attention(
    attention: Tensor, layers: LayerSelection = "last", heads: HeadSelection = "all"
) -> Tensor:
    """Chosen layers' chosen heads of the teacher-forced cross-attention, as ICA takes them.

    Args:
        attention: ``[B, Λ, H, T, L]`` cross-attention probabilities
            (:meth:`TransformerDecoder.forward`).
        layers: ``"last"``, ``"all"`` or a list of layer indices (negative counts from the end).
        heads: ``"all"`` or a list of head indices, taken in every selected layer.

    Returns:
        ``[B, H', T, L]`` with ``H' = len(layers) · len(heads)``, layer-major (entry
        ``i·len(heads) + j`` is head ``heads[j]`` of layer ``layers[i]``): the multi-head layout
        of :func:`ica_captioning.losses.ica.ica_loss` (``head_reduction`` mean | max | per_head).
        Gradients flow only into the selected maps.
    """
    if attention.dim() != 5:
        shape = tuple(attention.shape)
        raise ValueError(f"attention must be [B, layers, heads, T, L], got {shape}")
    b, num_layers, num_heads, t, cells = attention.shape
    li = _indices(layers, num_layers, "layers")
    hi = _indices(heads, num_heads, "heads")
    dev = attention.device
    picked = attention.index_select(1, torch.tensor(li, device=dev))
    picked = picked.index_select(2, torch.tensor(hi, device=dev))  # [B, |li|, |hi|, T, L]
    return picked.reshape(b, len(li) * len(hi), t, cells)


def protocol_attention(
    attention: Tensor, layers: LayerSelection = "last", heads: HeadSelection = "all"
) -> Tensor:
    """The teacher-forced maps in the protocol's multi-head layout ``[B, T, H', L]``.

    ``select_attention(...).transpose(1, 2)``. With a decoder's own selection
    (:meth:`TransformerDecoder.protocol_attention`) these are the maps its ``step`` returns, step
    by step, so a ``CaptionModel``'s ``__call__`` returns what evaluation sees.
    ``sequence_attention`` averages them over heads.
    """
    return select_attention(attention, layers, heads).transpose(1, 2)


class TransformerDecoder(nn.Module):
    """Pre-LN Transformer caption decoder with cross-attention to the grid cells.

    Teacher forcing (:meth:`forward`) returns every layer's and head's cross-attention
    ``[B, Λ, H, T, L]``; :func:`select_attention` picks the layers and heads the ICA loss should
    supervise. The decoder holds one such selection, :attr:`attention_layers` and
    :attr:`attention_heads` (``train.transformer.ica_layers`` / ``ica_heads``): step-wise
    decoding (:meth:`init_state`, :meth:`step`) follows the protocol with a key/value cache and
    ``step`` returns **the selected maps** ``[R, H', L]``, which every protocol consumer (beam
    search, greedy, evaluation, figures) averages over ``H'``; :meth:`protocol_attention` gives
    the same maps teacher-forced (``[B, T, H', L]``, what ``Captioner.forward`` returns). So
    evaluation measures the maps that ICA supervises (with the default selection, the last
    layer's heads), for the baseline too.

    Rows and images: like the SAT decoder, ``step`` takes ``features [N, L, D]`` with
    ``tokens [N·K]`` (``K`` consecutive rows per image); the memory and the cross-attention keys
    and values (:attr:`image_state_slots`) stay at ``N`` rows and are shared by the ``K`` beams.

    Args:
        vocab_size: V (index ``PAD_ID`` is ``<pad>``; padded inputs after a caption's end never
            influence its earlier steps, the self-attention being causal).
        feature_dim: D, channels of the annotation vectors.
        d_model: model width (divisible by ``num_heads`` and by 4).
        num_layers: Λ ≥ 1 decoder blocks.
        num_heads: H attention heads (self- and cross-attention, encoder too).
        d_ff: hidden size of the feed-forward blocks.
        dropout: dropout on embeddings, memory, residual branches and inside the feed-forward.
        encoder_layers: pre-LN encoder layers over the cells (0 = none: projection + positions).
        grid_size: G, the features have ``L = G²`` cells in row-major order.
        max_len: most input tokens per caption (positions ``0 … max_len − 1``); for evaluation
            at ``max_len`` words beam search feeds ``max_len + 1`` tokens.
        tie_embeddings: use the input embedding matrix as the output projection's weight.
        attention_init_scale: multiplies the initial weights of every cross-attention query
            projection, i.e. the initial cross-attention logits (an inverse temperature at
            initialisation; 1 = PyTorch's default init). Trained freely afterwards.
        attention_layers: layers of the maps :meth:`step` and :meth:`protocol_attention` return
            (``"last"``, ``"all"`` or indices; :func:`select_attention`).
        attention_heads: heads of those layers (``"all"`` or indices).
    """

    #: State slots indexed by image (``memory``, ``cross_k``, ``cross_v``), see :data:`State`.
    image_state_slots: tuple[int, ...] = (3, 4, 5)

    def __init__(
        self,
        *,
        vocab_size: int,
        feature_dim: int,
        d_model: int,
        num_layers: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        encoder_layers: int,
        grid_size: int,
        max_len: int,
        tie_embeddings: bool,
        attention_init_scale: float = 1.0,
        attention_layers: LayerSelection = "last",
        attention_heads: HeadSelection = "all",
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_heads < 1 or encoder_layers < 0 or max_len < 1:
            raise ValueError(
                f"need num_layers ≥ 1, num_heads ≥ 1, encoder_layers ≥ 0, max_len ≥ 1; got "
                f"{num_layers}, {num_heads}, {encoder_layers}, {max_len}"
            )
        if d_model % num_heads or d_model % 4:
            raise ValueError(
                f"d_model={d_model} must be divisible by num_heads={num_heads} and by 4 "
                "(half the channels each for the row and column sinusoids)"
            )
        self.vocab_size = int(vocab_size)
        self.feature_dim = int(feature_dim)
        self.d_model = int(d_model)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.d_head = self.d_model // self.num_heads
        self.grid_size = int(grid_size)
        self.max_len = int(max_len)
        self.tie_embeddings = bool(tie_embeddings)
        #: Selected layers and heads (index lists) of :meth:`step` / :meth:`protocol_attention`.
        self.attention_layers = _indices(attention_layers, self.num_layers, "layers")
        self.attention_heads = _indices(attention_heads, self.num_heads, "heads")

        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=d_model**-0.5)  # × √d_model at the input
        self.feature_proj = nn.Linear(feature_dim, d_model)
        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(encoder_layers)
        )
        self.memory_norm = nn.LayerNorm(d_model)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        if self.tie_embeddings:
            self.out.weight = self.embedding.weight
        if not attention_init_scale > 0:
            raise ValueError(f"attention_init_scale must be > 0, got {attention_init_scale}")
        with torch.no_grad():
            for layer in self.layers:
                layer.cross_attn.q.weight.mul_(float(attention_init_scale))
        self.dropout = nn.Dropout(dropout)
        # Fixed encodings: not saved (a bundle does not depend on max_len for them).
        self.register_buffer(
            "word_positions", sinusoidal_encoding(self.max_len, d_model), persistent=False
        )
        self.register_buffer(
            "cell_positions", grid_positional_encoding(self.grid_size, d_model), persistent=False
        )

    # --- shared pieces -------------------------------------------------------------------------

    def encode_memory(self, features: Tensor) -> Tensor:
        """``features [N, L, D]`` → memory ``[N, L, d_model]`` (projection, cells, encoder, LN)."""
        if features.dim() != 3 or features.shape[1] != self.cell_positions.shape[0]:
            raise ValueError(
                f"features must be [N, L, D] with L = grid_size² = {self.cell_positions.shape[0]}"
                f", got {tuple(features.shape)}"
            )
        x = self.feature_proj(features) + self.cell_positions.to(features.dtype)
        x = self.dropout(x)
        for layer in self.encoder:
            x = layer(x)
        return self.memory_norm(x)

    def _cross_kv(self, memory: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        kvs = [layer.cross_attn.memory_kv(memory) for layer in self.layers]
        return [k for k, _ in kvs], [v for _, v in kvs]

    def _embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """``tokens [...]`` at ``positions`` (broadcastable) → ``[..., d_model]``."""
        emb = self.embedding(tokens) * math.sqrt(self.d_model)
        return self.dropout(emb + self.word_positions[positions].to(emb.dtype))

    def _logits(self, x: Tensor) -> Tensor:
        return self.out(self.final_norm(x))

    # --- teacher forcing -----------------------------------------------------------------------

    def forward(self, features: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced decoding of whole captions.

        Args:
            features: ``[B, L, D]`` annotation vectors (one row per caption).
            inputs: ``[B, T]`` long input tokens (``ids[:, :-1]``), ``T ≤ max_len``; padding
                after a caption's end is allowed (causal: valid steps never see it).

        Returns:
            ``(logits [B, T, V], cross_attention [B, Λ, H, T, L])``: step ``t`` (input
            ``inputs[:, t]``) predicts ``inputs[:, t + 1]``, and ``cross_attention[:, l, h, t]``
            is head ``h`` of layer ``l`` at that step (a distribution over the ``L`` cells). Use
            :func:`select_attention` for the ICA loss (``[B, H', T, L]``) and
            :func:`protocol_attention` for the protocol's ``[B, T, H, L]``.
        """
        steps = inputs.shape[1]
        if steps > self.max_len:
            raise ValueError(f"inputs have {steps} steps, more than max_len={self.max_len}")
        if inputs.shape[0] != features.shape[0]:
            raise ValueError(
                f"inputs {tuple(inputs.shape)} and features {tuple(features.shape)} need the same B"
            )
        memory = self.encode_memory(features)
        keys, values = self._cross_kv(memory)
        x = self._embed(inputs, torch.arange(steps, device=inputs.device))  # [B, T, d]
        maps = []
        for layer, k, v in zip(self.layers, keys, values):
            x, probs = layer(x, k, v)
            maps.append(probs)  # [B, H, T, L]
        return self._logits(x), torch.stack(maps, dim=1)

    def select_attention(
        self, attention: Tensor, layers: LayerSelection = "last", heads: HeadSelection = "all"
    ) -> Tensor:
        """:func:`select_attention`: ``[B, Λ, H, T, L]`` → ``[B, H', T, L]`` for ``ica_loss``."""
        return select_attention(attention, layers, heads)

    def protocol_attention(self, attention: Tensor) -> Tensor:
        """This decoder's selected maps of :meth:`forward`'s attention, ``[B, T, H', L]``.

        The teacher-forced counterpart of :meth:`step`'s maps: ``protocol_attention(attention,
        attention_layers, attention_heads)``.
        """
        return protocol_attention(attention, self.attention_layers, self.attention_heads)

    @property
    def attention_maps(self) -> list[tuple[int, int]]:
        """``(layer, head)`` of each of the ``H'`` selected maps, in their order (layer-major)."""
        return [(la, h) for la in self.attention_layers for h in self.attention_heads]

    # --- the decoder protocol ------------------------------------------------------------------

    def init_state(self, features: Tensor) -> State:
        """State before the first step (``K = 1``).

        Args:
            features: ``[N, L, D]`` annotation vectors.

        Returns:
            ``(position [N] = 0, self_k [N, Λ, H, 0, d_h], self_v, memory [N, L, d_model],
            cross_k [N, Λ, H, L, d_h], cross_v)`` — see :data:`State`. The memory and the
            cross-attention keys/values are computed here once, not per step.
        """
        memory = self.encode_memory(features)
        keys, values = self._cross_kv(memory)
        n = features.shape[0]
        empty = memory.new_zeros(n, self.num_layers, self.num_heads, 0, self.d_head)
        position = torch.zeros(n, dtype=torch.long, device=features.device)
        return (
            position,
            empty,
            empty.clone(),
            memory,
            torch.stack(keys, dim=1),
            torch.stack(values, dim=1),
        )

    def step_all(
        self, features: Tensor, tokens: Tensor, state: State
    ) -> tuple[Tensor, Tensor, State]:
        """:meth:`step` with every layer's cross-attention ``[R, Λ, H, L]``."""
        position, self_k, self_v, memory, cross_k, cross_v = state
        n, rows = features.shape[0], tokens.shape[0]
        if (
            (rows % n if n else rows)
            or position.shape[0] != rows
            or self_k.shape[0] != rows
            or self_v.shape[0] != rows
            or not memory.shape[0] == cross_k.shape[0] == cross_v.shape[0] == n
        ):
            raise ValueError(
                f"TransformerDecoder.step: tokens [{rows}], position {tuple(position.shape)} and "
                f"the self-attention cache {tuple(self_k.shape)} must have N·K rows for features "
                f"{tuple(features.shape)} (N images), and the memory {tuple(memory.shape)} and "
                f"cross keys/values {tuple(cross_k.shape)} N rows"
            )
        if self_k.shape[3] >= self.max_len:
            raise ValueError(
                f"TransformerDecoder.step: position {self_k.shape[3]} is past "
                f"max_len={self.max_len}"
            )
        x = self._embed(tokens, position)  # [R, d]
        new_k, new_v, maps = [], [], []
        for i, layer in enumerate(self.layers):
            x, probs, k, v = layer.step(x, self_k[:, i], self_v[:, i], cross_k[:, i], cross_v[:, i])
            new_k.append(k)
            new_v.append(v)
            maps.append(probs)
        # New tensors (never in-place): beam search reorders every slot it gets back as a new
        # object, and keeps a slot it gets back unchanged as shared between beams.
        self_k = torch.cat([self_k.to(new_k[0].dtype), torch.stack(new_k, dim=1)], dim=3)
        self_v = torch.cat([self_v.to(new_v[0].dtype), torch.stack(new_v, dim=1)], dim=3)
        state = (position + 1, self_k, self_v, memory, cross_k, cross_v)
        return self._logits(x), torch.stack(maps, dim=1), state

    def step(self, features: Tensor, tokens: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """One decoding step (the protocol's ``step``).

        Args:
            features: ``[N, L, D]`` annotation vectors (only their ``N`` is used: the memory is
                in the state).
            tokens: ``[N·K]`` long input tokens (``K ≥ 1`` consecutive rows per image).
            state: from :meth:`init_state` or the previous step; the row slots (position and
                self-attention cache) have ``N·K`` rows, the image slots ``N``.

        Returns:
            ``(logits [N·K, V], attention [N·K, H', L], new state)``: the attention is the
            selected layers' selected heads (:attr:`attention_maps`; by default the last layer's
            heads), which consumers average over ``H'``.

        Raises:
            ValueError: rows that are not a multiple of the images, state of the wrong size, or a
                position at ``max_len``.
        """
        logits, maps, state = self.step_all(features, tokens, state)  # maps [R, Λ, H, L]
        rows = maps.shape[0]
        dev = maps.device
        maps = maps.index_select(1, torch.tensor(self.attention_layers, device=dev))
        maps = maps.index_select(2, torch.tensor(self.attention_heads, device=dev))
        return logits, maps.reshape(rows, -1, maps.shape[-1]), state
