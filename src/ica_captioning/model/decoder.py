"""Soft-attention LSTM decoder of Show, Attend and Tell (Xu et al. 2015).

Per step ``t`` (input token ``y_{t-1}``, previous state ``h_{t-1}, c_{t-1}``):

* additive attention ``e_{tl} = w·tanh(W_a a_l + U_a h_{t-1})``, ``α_t = softmax_l(e_t)``;
* gated context ``ẑ_t = β_t Σ_l α_{tl} a_l`` with the scalar gate ``β_t = σ(f_β(h_{t-1}))``;
* LSTM update on ``[E y_{t-1}; ẑ_t]``;
* deep output ``p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z ẑ_t))`` with dropout before ``L_o``.

``h_0, c_0`` are affine maps of the mean annotation vector. Step ``t`` of a caption
``[<start>, w_0, …, w_{n-1}, <end>]`` takes ``ids[t]`` and predicts ``ids[t + 1]``, so the
attention map of step ``i`` is the one that belongs to word ``w_i`` (DESIGN.md alignment).
"""

from __future__ import annotations

import torch
from torch import nn

#: Decoder state: ``(h [B, H], c [B, H], projected annotations [B, L, A])``. The projection
#: ``W_a a`` is carried in the state so that ``step`` does not recompute it; every tensor has the
#: batch dimension first, so beam search can reorder the state with ``index_select(0, ...)``.
State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class AttentionDecoder(nn.Module):
    """Show-Attend-Tell decoder.

    Args:
        vocab_size: V, size of the output vocabulary (index 0 is ``<pad>``).
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
        vocab_size: int,
        feature_dim: int,
        embed_dim: int = 64,
        hidden_dim: int = 256,
        attention_dim: int = 128,
        dropout: float = 0.3,
        attention_init_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.vocab_size = int(vocab_size)
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
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

    def init_state(self, features: torch.Tensor) -> State:
        """Initial state from the mean annotation vector.

        Args:
            features: ``[B, L, D]`` annotation vectors.

        Returns:
            ``(h [B, H], c [B, H], projected features [B, L, A])``.
        """
        mean = features.mean(dim=1)  # [B, D]
        return self.init_h(mean), self.init_c(mean), self.att_features(features)

    def attend(
        self, features: torch.Tensor, projected: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Additive attention.

        Args:
            features: ``[B, L, D]``.
            projected: ``[B, L, A]`` = ``W_a features``.
            h: ``[B, H]`` previous hidden state.

        Returns:
            ``(context [B, D], alpha [B, L])``; ``alpha`` sums to 1 over ``L``.
        """
        scores = self.att_score(torch.tanh(projected + self.att_hidden(h).unsqueeze(1)))
        alpha = torch.softmax(scores.squeeze(-1).float(), dim=-1).to(features.dtype)  # [B, L]
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)  # [B, D]
        return context, alpha

    def step(
        self, features: torch.Tensor, tokens: torch.Tensor, state: State
    ) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One decoding step.

        Args:
            features: ``[B, L, D]`` annotation vectors.
            tokens: ``[B]`` long, the input tokens ``y_{t-1}``.
            state: state from :meth:`init_state` or the previous step.

        Returns:
            ``(logits [B, V], alpha [B, L], new state)``.
        """
        h, c, projected = state
        emb = self.embedding(tokens)  # [B, E]
        context, alpha = self.attend(features, projected, h)
        gated = torch.sigmoid(self.gate(h)) * context  # [B, D]
        h, c = self.lstm(torch.cat([emb, gated], dim=1), (h, c))
        deep = emb + self.out_hidden(h) + self.out_context(gated)  # [B, E]
        logits = self.out(self.dropout(deep))  # [B, V]
        return logits, alpha, (h, c, projected)

    def forward(
        self, features: torch.Tensor, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoding.

        Args:
            features: ``[B, L, D]`` annotation vectors.
            inputs: ``[B, T]`` long input tokens (``ids[:, :-1]``; padding allowed — padded steps
                produce outputs that the loss masks out, and valid steps never see them).

        Returns:
            ``(logits [B, T, V], alphas [B, T, L])``.
        """
        state = self.init_state(features)
        logits, alphas = [], []
        for t in range(inputs.shape[1]):
            step_logits, alpha, state = self.step(features, inputs[:, t], state)
            logits.append(step_logits)
            alphas.append(alpha)
        return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)
