"""The benchmarks' tutorial reference computes what it claims (its speed ratios depend on it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_beam_search import BANNED, shrinking_beam_search  # noqa: E402
from tutorial_reference import TutorialDecoder, tutorial_beam_search  # noqa: E402

from ica_captioning.tokens import END_ID, PAD_ID, START_ID  # noqa: E402

V, D, L = 13, 8, 6


def _decoder(seed=0) -> TutorialDecoder:
    torch.manual_seed(seed)
    dec = TutorialDecoder(
        vocab_size=V, feature_dim=D, embed_dim=5, hidden_dim=7, attention_dim=4, dropout=0.0
    ).eval()
    with torch.no_grad():
        dec.fc.weight.mul_(4.0)
        dec.fc.bias[END_ID] += 1.5  # captions end within the cap
    return dec


class _Protocol:
    """The tutorial decoder behind ``init_state``/``step`` (no image slots: state per row)."""

    def __init__(self, decoder: TutorialDecoder) -> None:
        self.decoder = decoder

    def init_state(self, features):
        h, c = self.decoder.init_hidden_state(features)
        return h, c, features

    def step(self, features, tokens, state):
        h, c, encoder_out = state
        logits, alpha, h, c = self.decoder.step(encoder_out, tokens, h, c)
        return logits, alpha, (h, c, encoder_out)


def test_tutorial_training_forward_equals_every_row_steps_on_valid_positions():
    dec = _decoder()
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(4, L, D, generator=gen)
    lengths = torch.tensor([4, 7, 3, 6])  # tokens incl. <start> and <end>
    caps = torch.full((4, 7), PAD_ID)
    for i, n in enumerate(lengths.tolist()):
        caps[i, :n] = torch.randint(4, V, (n,), generator=gen)
        caps[i, 0], caps[i, n - 1] = START_ID, END_ID
    with torch.no_grad():
        preds, sorted_caps, decode_lengths, _ = dec(feats, caps, lengths)
        order = lengths.sort(descending=True).indices
        h, c = dec.init_hidden_state(feats[order])
        for t in range(max(decode_lengths)):
            logits, _, h, c = dec.step(feats[order], sorted_caps[:, t], h, c)
            rows = torch.tensor([n > t for n in decode_lengths])
            torch.testing.assert_close(preds[rows, t], logits[rows])
            assert (preds[~rows, t] == 0).all()
    assert torch.equal(sorted_caps, caps[order])


@pytest.mark.parametrize("beam", [1, 3])
def test_tutorial_search_equals_the_shrinking_search_on_the_same_model(beam):
    dec = _decoder(seed=2)
    feats = torch.randn(6, L, D, generator=torch.Generator().manual_seed(3))
    for i in range(len(feats)):
        ours = tutorial_beam_search(dec, feats[i : i + 1], beam, max_len=12, banned=BANNED)
        ref = shrinking_beam_search(_Protocol(dec), feats[i : i + 1], beam, max_len=12)
        assert ours == [w for w in ref if w != END_ID][:12]
