"""Transformer decoder: protocol, KV cache, causality, head selection, ICA, search."""

from __future__ import annotations

import itertools

import pytest
import torch
from project_conf import encoder_kwargs

from ica_captioning.decoding.beam_search import beam_search, beam_search_features
from ica_captioning.decoding.greedy import greedy_decode
from ica_captioning.decoding.teacher_forcing import teacher_forced_alphas
from ica_captioning.losses.ica import ica_loss
from ica_captioning.model.captioner import Captioner
from ica_captioning.model.encoder import Encoder
from ica_captioning.model.protocol import CaptionDecoder, CaptionModel, sequence_attention
from ica_captioning.model.transformer import (
    TransformerDecoder,
    grid_positional_encoding,
    protocol_attention,
    select_attention,
)
from ica_captioning.tokens import END_ID, PAD_ID, START_ID, UNK_ID

V, D, G, L = 12, 6, 3, 9
LAYERS, HEADS, D_MODEL = 2, 4, 32
D_HEAD = D_MODEL // HEADS
BANNED = (PAD_ID, START_ID, UNK_ID)


def make_decoder(seed=0, *, vocab=V, encoder_layers=1, tie=True, max_len=8, feature_dim=D):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dec = TransformerDecoder(
            vocab_size=vocab, feature_dim=feature_dim, d_model=D_MODEL, num_layers=LAYERS,
            num_heads=HEADS, d_ff=64, dropout=0.1, encoder_layers=encoder_layers, grid_size=G,
            max_len=max_len, tie_embeddings=tie,
        )  # fmt: skip
    return dec.eval()  # dropout off


def features(n, seed=11, dim=D):
    return torch.randn(n, L, dim, generator=torch.Generator().manual_seed(seed))


def tokens(shape, seed=5, vocab=V):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_protocol_shapes_and_distributions():
    dec = make_decoder()
    assert isinstance(dec, CaptionDecoder)
    feats, inputs = features(3), tokens((3, 5))
    with torch.no_grad():
        logits, attn = dec(feats, inputs)
        assert logits.shape == (3, 5, V) and attn.shape == (3, LAYERS, HEADS, 5, L)
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, LAYERS, HEADS, 5))
        state = dec.init_state(feats)
        assert isinstance(state, tuple) and len(state) == 6
        assert all(s.shape[0] == 3 for s in state)
        assert dec.image_state_slots == (3, 4, 5)
        assert state[0].tolist() == [0, 0, 0]
        assert state[1].shape == state[2].shape == (3, LAYERS, HEADS, 0, D_HEAD)
        assert state[3].shape == (3, L, D_MODEL)
        assert state[4].shape == state[5].shape == (3, LAYERS, HEADS, L, D_HEAD)
        step_logits, alpha, state = dec.step(feats, inputs[:, 0], state)
        assert step_logits.shape == (3, V) and alpha.shape == (3, HEADS, L)
        torch.testing.assert_close(alpha.sum(-1), torch.ones(3, HEADS))
        assert state[0].tolist() == [1, 1, 1] and state[1].shape[3] == 1
        # The teacher-forced maps in the protocol layout are the ones step returns.
        assert protocol_attention(attn).shape == (3, 5, HEADS, L)
        torch.testing.assert_close(protocol_attention(attn)[:, 0], alpha)


def test_tied_embeddings_share_one_matrix_and_state_dict_round_trips():
    tied, untied = make_decoder(tie=True), make_decoder(tie=False)
    assert tied.out.weight is tied.embedding.weight
    assert untied.out.weight is not untied.embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + V * D_MODEL
    # Positional tables are fixed buffers that are not saved.
    assert not any("positions" in k for k in tied.state_dict())
    other = make_decoder(seed=1, tie=True)
    other.load_state_dict(tied.state_dict())
    feats, inputs = features(2), tokens((2, 4))
    with torch.no_grad():
        for a, b in zip(tied(feats, inputs), other(feats, inputs)):
            torch.testing.assert_close(a, b)


def test_grid_encoding_is_row_then_column():
    enc = grid_positional_encoding(G, 8)  # [G², 8]
    rows, cols = enc[:, :4].view(G, G, 4), enc[:, 4:].view(G, G, 4)
    assert (rows == rows[:, :1]).all() and (cols == cols[:1]).all()  # row part constant along c
    torch.testing.assert_close(rows[:, 0], cols[0])  # the same 1-D encoding of the index
    assert len({tuple(r.tolist()) for r in enc}) == G * G  # every cell distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_positional_encoding(G, 6)


@pytest.mark.parametrize(("encoder_layers", "tie"), [(0, True), (1, False)])
def test_cached_steps_equal_full_recomputation(encoder_layers, tie):
    dec = make_decoder(encoder_layers=encoder_layers, tie=tie)
    feats, inputs = features(3), tokens((3, 6))
    with torch.no_grad():
        logits, attn = dec(feats, inputs)
        state = dec.init_state(feats)
        for t in range(inputs.shape[1]):
            step_logits, maps, state = dec.step_all(feats, inputs[:, t], state)
            torch.testing.assert_close(step_logits, logits[:, t], atol=1e-5, rtol=0)
            torch.testing.assert_close(maps, attn[:, :, :, t], atol=1e-5, rtol=0)
        # step is step_all's last layer
        state = dec.init_state(feats)
        _, alpha, _ = dec.step(feats, inputs[:, 0], state)
        torch.testing.assert_close(alpha, attn[:, -1, :, 0], atol=1e-5, rtol=0)


def _reference(dec, feats, history):
    """Full recomputation: logits [V] and maps [layers, H, L] of the last token of history."""
    logits, attn = dec(feats[None], torch.tensor([history]))
    return logits[0, -1], attn[0, :, :, -1]


@pytest.mark.parametrize("grouped", [True, False])
def test_cache_survives_beam_reordering(grouped):
    """Rows expanded to K per image and shuffled (as beam search does) keep their own history."""
    dec = make_decoder()
    n, k = 2, 3
    feats = features(n)
    with torch.no_grad():
        state = dec.init_state(feats)
        history = [[START_ID] for _ in range(n)]
        _, _, state = dec.step(feats, torch.tensor([START_ID] * n), state)
        # Expand to K rows per image (step-0 expansion), then reorder rows within images.
        orders = [[0, 0, 0, 1, 1, 1], [2, 0, 0, 4, 5, 3], [1, 1, 2, 3, 5, 5]]
        rows_feats = feats if grouped else feats.repeat_interleave(k, dim=0)
        step_tokens = tokens((len(orders), n * k), seed=7)
        shared = dec.image_state_slots if grouped else ()
        for i, order in enumerate(orders):
            # Beam search's reordering: index_select on dim 0 of every slot, except the image
            # slots of a grouped decoder (ungrouped: the first order copies them K times).
            idx = torch.tensor(order)
            state = tuple(s if j in shared else s.index_select(0, idx) for j, s in enumerate(state))
            history = [list(history[r]) for r in order]
            toks = step_tokens[i]
            logits, maps, state = dec.step_all(rows_feats, toks, state)
            for r in range(n * k):
                history[r].append(int(toks[r]))
                ref_logits, ref_maps = _reference(dec, feats[r // k], history[r])
                torch.testing.assert_close(logits[r], ref_logits, atol=1e-5, rtol=0)
                torch.testing.assert_close(maps[r], ref_maps, atol=1e-5, rtol=0)
            assert all(s.shape[0] == (n if j in shared else n * k) for j, s in enumerate(state))


def test_step_checks_rows_and_length():
    dec = make_decoder(max_len=2)
    feats = features(2)
    with torch.no_grad():
        state = dec.init_state(feats)
        with pytest.raises(ValueError, match="N·K rows"):
            dec.step(feats, torch.tensor([1, 1, 1]), state)
        for _ in range(2):
            _, _, state = dec.step(feats, torch.tensor([1, 1]), state)
        with pytest.raises(ValueError, match="max_len"):
            dec.step(feats, torch.tensor([1, 1]), state)
        with pytest.raises(ValueError, match="max_len"):
            dec(feats, tokens((2, 3)))
        with pytest.raises(ValueError, match="grid_size"):
            dec.init_state(torch.randn(2, L + 1, D))


def test_self_attention_is_causal():
    dec = make_decoder()
    feats, inputs = features(2), tokens((2, 6))
    changed = inputs.clone()
    changed[:, 3] = (changed[:, 3] + 1) % V
    with torch.no_grad():
        logits, attn = dec(feats, inputs)
        logits2, attn2 = dec(feats, changed)
    torch.testing.assert_close(logits2[:, :3], logits[:, :3], atol=1e-6, rtol=0)
    torch.testing.assert_close(attn2[..., :3, :], attn[..., :3, :], atol=1e-6, rtol=0)
    assert not torch.allclose(logits2[:, 3:], logits[:, 3:])
    assert not torch.allclose(attn2[:, -1, :, 3:], attn[:, -1, :, 3:])


def test_select_attention_layers_and_heads():
    attn = torch.arange(2 * LAYERS * HEADS * 3 * L, dtype=torch.float).view(2, LAYERS, HEADS, 3, L)
    torch.testing.assert_close(select_attention(attn), attn[:, -1])
    torch.testing.assert_close(select_attention(attn, layers="last", heads="all"), attn[:, 1])
    torch.testing.assert_close(
        select_attention(attn, layers="all"), attn.reshape(2, LAYERS * HEADS, 3, L)
    )
    picked = select_attention(attn, layers=[1, 0], heads=[2, 0])
    assert picked.shape == (2, 4, 3, L)
    expected = [attn[:, 1, 2], attn[:, 1, 0], attn[:, 0, 2], attn[:, 0, 0]]  # layer-major
    torch.testing.assert_close(picked, torch.stack(expected, dim=1))
    torch.testing.assert_close(select_attention(attn, layers=[-1], heads=[3]), attn[:, 1, 3:4])
    dec = make_decoder()
    torch.testing.assert_close(dec.select_attention(attn, [0], [1]), attn[:, 0, 1:2])
    torch.testing.assert_close(
        protocol_attention(attn, "all", [1]), select_attention(attn, "all", [1]).transpose(1, 2)
    )
    for layers, heads in [([2], "all"), ("last", [4]), ([], "all"), ("first", "all"),
                          ("all", "last"), ([0.5], "all")]:  # fmt: skip
        with pytest.raises(ValueError):
            select_attention(attn, layers, heads)
    with pytest.raises(ValueError, match="layers, heads"):
        select_attention(attn[:, 0])


def _grad(p):
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _head_rows(head):
    return slice(head * D_HEAD, (head + 1) * D_HEAD)


def _ica_backward(dec, layers, heads):
    feats, inputs = features(3), tokens((3, 5))
    targets = torch.rand(3, 5, L, generator=torch.Generator().manual_seed(3)) > 0.6
    targets[..., 0] = True  # every mask has a cell
    dec.zero_grad(set_to_none=True)
    _, attn = dec(feats, inputs)
    chosen = dec.select_attention(attn, layers=layers, heads=heads)  # [B, H', T, L]
    loss = ica_loss(chosen, targets, mapping="log", head_reduction="per_head")
    loss.backward()
    assert loss.item() > 0


def test_ica_gradients_reach_only_the_chosen_layer_and_head():
    dec = make_decoder(tie=False)
    _ica_backward(dec, layers=[0], heads=[1])
    chosen, later = dec.layers[0], dec.layers[1]
    # Nothing after layer 0's cross-attention probabilities gets a gradient.
    for name, p in [*later.named_parameters(), *dec.out.named_parameters(),
                    *dec.final_norm.named_parameters(), *chosen.ff.named_parameters(),
                    *chosen.norm3.named_parameters(),
                    *chosen.cross_attn.out.named_parameters()]:  # fmt: skip
        assert (_grad(p) == 0).all(), name
    cross = chosen.cross_attn
    q_w, q_b = _grad(cross.q.weight), _grad(cross.q.bias)
    kv_w, kv_b = _grad(cross.kv.weight), _grad(cross.kv.bias)
    for h in range(HEADS):  # query and key rows of the other heads: exactly zero
        rows = _head_rows(h)
        for g in (q_w[rows], q_b[rows], kv_w[rows]):
            assert (g == 0).all() if h != 1 else (g != 0).any(), h
    assert (kv_w[D_MODEL:] == 0).all() and (kv_b[D_MODEL:] == 0).all()  # values: unused
    # What produces the chosen map does get gradients.
    for module in (chosen.self_attn, chosen.norm1, chosen.norm2, dec.embedding,
                   dec.feature_proj, dec.encoder, dec.memory_norm):  # fmt: skip
        assert any((_grad(p) != 0).any() for p in module.parameters()), module


def test_ica_on_the_last_layer_flows_through_earlier_layers():
    dec = make_decoder(tie=True)
    _ica_backward(dec, layers="last", heads=[0, 2])
    last, first = dec.layers[1].cross_attn, dec.layers[0].cross_attn
    q_w, kv_w = _grad(last.q.weight), _grad(last.kv.weight)
    for h in range(HEADS):
        rows = _head_rows(h)
        assert ((q_w[rows] != 0).any() and (kv_w[rows] != 0).any()) == (h in (0, 2)), h
    assert (_grad(last.out.weight) == 0).all() and (_grad(dec.out.bias) == 0).all()
    # Layer 0 is upstream of layer 1's queries: every head of it (values too) gets a gradient.
    for h in range(HEADS):
        assert (_grad(first.q.weight)[_head_rows(h)] != 0).any()
    assert (_grad(first.kv.weight)[D_MODEL:] != 0).any()
    assert (_grad(dec.embedding.weight) != 0).any()  # tied: through the inputs only


def _search_decoder():
    dec = make_decoder(seed=0, vocab=7, max_len=4, tie=False)
    with torch.no_grad():  # peaky words and image-dependent captions, so that search matters
        dec.out.weight.mul_(10.0)
        for layer in dec.layers:
            layer.cross_attn.out.weight.mul_(4.0)
            layer.cross_attn.q.weight.mul_(3.0)
    return dec


def _exhaustive_best(dec, feats, vocab, max_len):
    """Best complete caption by scoring every sequence in one teacher-forced batch."""
    words = [w for w in range(vocab) if w not in (*BANNED, END_ID)]
    seqs = [list(s) for n in range(max_len + 1) for s in itertools.product(words, repeat=n)]
    inputs = torch.tensor([[START_ID, *s] + [PAD_ID] * (max_len - len(s)) for s in seqs])
    targets = torch.tensor([[*s, END_ID] + [PAD_ID] * (max_len - len(s)) for s in seqs])
    with torch.no_grad():
        logits, _ = dec(feats[None].expand(len(seqs), -1, -1), inputs)
    logp = torch.log_softmax(logits, -1).gather(2, targets.unsqueeze(-1)).squeeze(-1)
    scores = (logp * (targets != PAD_ID)).sum(1)
    best = int(scores.argmax())
    return seqs[best], float(scores[best])


class _Ungrouped(torch.nn.Module):
    """The decoder without ``image_state_slots``: every slot and feature row per beam row."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def init_state(self, feats):
        return self.inner.init_state(feats)

    def step(self, feats, toks, state):
        return self.inner.step(feats, toks, state)


def test_wide_beam_equals_exhaustive_search():
    dec, feats, max_len = _search_decoder(), features(6), 3
    kw = dict(max_len=max_len, start_id=START_ID, end_id=END_ID, pad_id=PAD_ID, banned_ids=BANNED)
    # 3 real words: 1 + 3 + 9 + 27 = 40 complete captions, so a beam of 40 holds them all.
    out = beam_search_features(dec, feats, beam_size=40, **kw)
    greedy = beam_search_features(dec, feats, beam_size=1, **kw)
    ungrouped = beam_search_features(_Ungrouped(dec), feats, beam_size=40, **kw)
    assert ungrouped.token_lists() == out.token_lists()
    torch.testing.assert_close(ungrouped.scores, out.scores)
    torch.testing.assert_close(ungrouped.alphas, out.alphas)
    for b in range(feats.shape[0]):
        words, score = _exhaustive_best(dec, feats[b], 7, max_len)
        assert out.token_lists()[b] == words
        assert out.scores[b].item() == pytest.approx(score, abs=1e-4)
    assert greedy.token_lists() != out.token_lists()  # search matters for this model
    assert len({tuple(w) for w in out.token_lists()}) > 1  # and captions depend on the image
    # Beam-search maps are the head mean of the last layer of the teacher-forced pass.
    b = max(range(feats.shape[0]), key=lambda i: int(out.lengths[i]))
    n = int(out.lengths[b])
    with torch.no_grad():
        _, attn = dec(feats[b : b + 1], torch.tensor([[START_ID, *out.token_lists()[b]]]))
    maps = sequence_attention(protocol_attention(attn))[0, :n]
    torch.testing.assert_close(out.alphas[b, :n], maps, atol=1e-5, rtol=0)


def test_captioner_holds_the_transformer_decoder():
    encoder = Encoder(**encoder_kwargs(backbone="resnet18", layer="layer1", grid_size=G,
                                       image_size=32))  # fmt: skip
    dec = make_decoder(feature_dim=encoder.out_dim, max_len=6)
    model = Captioner(encoder, dec, {"encoder": {}, "decoder": {}}).eval()
    assert isinstance(model, CaptionModel) and model.grid_size == G
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[START_ID, 4, 5, 6, END_ID], [START_ID, 7, END_ID, PAD_ID, PAD_ID]])
    with torch.no_grad():
        feats = model.encode(images)
        logits, attn = model(images=images, inputs=ids[:, :-1])
        # Captioner.forward reduces the decoder's [B, Λ, H, T, L] to its selection [B, T, H', L]
        # (the default decoder's: the last layer's heads).
        assert logits.shape == (2, 4, V) and attn.shape == (2, 4, HEADS, L)
        _, full = model.decoder(feats, ids[:, :-1])
        torch.testing.assert_close(attn, protocol_attention(full))
        forced = teacher_forced_alphas(model.decoder, feats, ids)  # mixed lengths: state slicing
        expected = sequence_attention(attn)
        torch.testing.assert_close(forced[0], expected[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(forced[1, :2], expected[1, :2], atol=1e-5, rtol=0)
        assert (forced[1, 2:] == 0).all()
        toks, alphas, lengths = greedy_decode(model.decoder, feats, max_len=5)
        assert toks.shape[0] == 2 and alphas.shape[-1] == L
    out = beam_search(model, images, beam_size=3, max_len=4, start_id=START_ID, end_id=END_ID,
                      banned_ids=BANNED)  # fmt: skip
    assert out.tokens.shape[0] == 2 and out.alphas.shape[-1] == L
