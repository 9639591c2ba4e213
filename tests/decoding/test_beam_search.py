import itertools
import math

import pytest
import torch
from _decoding_toys import ToyDecoder, ToyModel
from project_conf import section

from ica_captioning.decoding import beam_search, beam_search_features, teacher_forced_alphas
from ica_captioning.tokens import END_ID, PAD_ID, START_ID, UNK_ID

BANNED = (PAD_ID, START_ID, UNK_ID)


def sequence_logprob(decoder, features, words):
    """log p(words + <end> | image) by running the decoder one token at a time."""
    state = decoder.init_state(features[None])
    total = 0.0
    inputs = [START_ID, *words]
    targets = [*words, END_ID]
    with torch.no_grad():
        for inp, tgt in zip(inputs, targets):
            logits, _, state = decoder.step(features[None], torch.tensor([inp]), state)
            total += torch.log_softmax(logits[0], -1)[tgt].item()
    return total


def exhaustive_best(decoder, features, vocab, max_len, length_penalty=0.0):
    words = [w for w in range(vocab) if w not in (*BANNED, END_ID)]
    best = (-math.inf, None)
    for n in range(max_len + 1):
        for seq in itertools.product(words, repeat=n):
            lp = sequence_logprob(decoder, features, list(seq))
            ranked = lp / (n + 1) ** length_penalty
            if ranked > best[0]:
                best = (ranked, list(seq), lp)
    return best


def per_image_beam_search(decoder, features, beam_size, max_len):
    """Straightforward list-of-hypotheses beam search for one image (reference)."""
    state = decoder.init_state(features[None])
    hyps = [(0.0, [], state, False)]  # score, tokens, state, finished
    for t in range(max_len + 1):
        candidates = []
        for score, toks, st, done in hyps:
            if done:
                candidates.append((score, toks, st, True))
                continue
            inp = toks[-1] if toks else START_ID
            with torch.no_grad():
                logits, _, new_st = decoder.step(features[None], torch.tensor([inp]), st)
            logp = torch.log_softmax(logits[0], -1)
            for w in range(logp.shape[0]):
                if w in BANNED or (t == max_len and w != END_ID):
                    continue
                candidates.append((score + logp[w].item(), toks + [w], new_st, w == END_ID))
        candidates.sort(key=lambda h: -h[0])
        hyps = candidates[:beam_size]
        if all(h[3] for h in hyps):
            break
    best = max(hyps, key=lambda h: h[0])
    toks = best[1][:-1] if best[1] and best[1][-1] == END_ID else best[1]
    return toks, best[0]


def run(decoder, features, **kw):
    kw.setdefault("start_id", START_ID)
    kw.setdefault("end_id", END_ID)
    kw.setdefault("pad_id", PAD_ID)
    kw.setdefault("banned_ids", BANNED)
    return beam_search_features(decoder, features, **kw)


def test_wide_beam_equals_exhaustive_search(toy_decoder, toy_features):
    max_len = 3
    # 3 real words: 1 + 3 + 9 + 27 = 40 complete sequences, so a beam of 40 holds them all.
    out = run(toy_decoder, toy_features, beam_size=40, max_len=max_len)
    greedy = run(toy_decoder, toy_features, beam_size=1, max_len=max_len)
    differs_from_greedy = 0
    for b in range(toy_features.shape[0]):
        _, words, lp = exhaustive_best(toy_decoder, toy_features[b], 7, max_len)
        assert out.token_lists()[b] == words
        assert out.scores[b].item() == pytest.approx(lp, abs=1e-5)
        differs_from_greedy += greedy.token_lists()[b] != words
    # The toy model is chosen so that search matters (otherwise this test could not fail).
    assert differs_from_greedy > 0


def test_wide_beam_with_length_penalty_equals_exhaustive(toy_decoder, toy_features):
    out = run(toy_decoder, toy_features, beam_size=40, max_len=3, length_penalty=1.0)
    for b in range(toy_features.shape[0]):
        _, words, _ = exhaustive_best(toy_decoder, toy_features[b], 7, 3, length_penalty=1.0)
        assert out.token_lists()[b] == words


@pytest.mark.parametrize("beam_size", [1, 2, 3, 5])
def test_batched_equals_per_image_beam_search(toy_decoder, toy_features, beam_size):
    out = run(toy_decoder, toy_features, beam_size=beam_size, max_len=6)
    for b in range(toy_features.shape[0]):
        words, score = per_image_beam_search(toy_decoder, toy_features[b], beam_size, 6)
        assert out.token_lists()[b] == words
        assert out.scores[b].item() == pytest.approx(score, abs=1e-5)


def test_greedy_is_argmax_decoding(toy_decoder, toy_features):
    out = run(toy_decoder, toy_features, beam_size=1, max_len=5)
    for b in range(toy_features.shape[0]):
        state = toy_decoder.init_state(toy_features[b : b + 1])
        inp, words = START_ID, []
        for t in range(6):
            logits, _, state = toy_decoder.step(toy_features[b : b + 1], torch.tensor([inp]), state)
            logits = logits[0].clone()
            logits[list(BANNED)] = -math.inf
            if t == 5:
                break
            inp = int(logits.argmax())
            if inp == END_ID:
                break
            words.append(inp)
        assert out.token_lists()[b] == words


def test_outputs_shapes_padding_and_alphas_match_teacher_forcing(toy_decoder, toy_features):
    out = run(toy_decoder, toy_features, beam_size=3, max_len=6)
    b, num_cells = toy_features.shape[0], toy_features.shape[1]
    width = int(out.lengths.max())
    assert out.tokens.shape == (b, width)
    assert out.alphas.shape == (b, width, num_cells)
    assert (out.lengths <= 6).all()
    for i, words in enumerate(out.token_lists()):
        n = len(words)
        assert (out.tokens[i, n:] == PAD_ID).all()
        assert (out.alphas[i, n:] == 0).all()
        assert END_ID not in words and not set(words) & set(BANNED)
        # The attention of word i is the one of the step that predicted it: teacher-forcing the
        # chosen caption must give the same maps.
        ids = torch.tensor([[START_ID, *words, END_ID]])
        tf = teacher_forced_alphas(toy_decoder, toy_features[i : i + 1], ids)[0, :n]
        torch.testing.assert_close(out.alphas[i, :n], tf)
        torch.testing.assert_close(out.alphas[i, :n].sum(-1), torch.ones(n))


def test_max_len_zero_forces_empty_captions(toy_decoder, toy_features):
    out = run(toy_decoder, toy_features, beam_size=3, max_len=0)
    assert out.lengths.tolist() == [0] * toy_features.shape[0]
    assert out.tokens.shape == (toy_features.shape[0], 1)
    for b in range(toy_features.shape[0]):
        assert out.scores[b].item() == pytest.approx(
            sequence_logprob(toy_decoder, toy_features[b], []), abs=1e-5
        )


def test_beam_search_on_images_chunks_consistently():
    model = ToyModel(vocab=9, num_cells=4, dim=5, seed=2)
    images = torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    kw = dict(
        beam_size=3, max_len=5, start_id=START_ID, end_id=END_ID, pad_id=PAD_ID, banned_ids=BANNED
    )
    whole = beam_search(model, images, batch_size=7, **kw)
    chunked = beam_search(model, images, batch_size=2, **kw)
    assert whole.token_lists() == chunked.token_lists()
    torch.testing.assert_close(whole.scores, chunked.scores)
    n = whole.tokens.shape[1]
    torch.testing.assert_close(whole.alphas, chunked.alphas[:, :n])


def test_bad_inputs_raise(toy_decoder, toy_features):
    with pytest.raises(ValueError, match="beam_size"):
        run(toy_decoder, toy_features, beam_size=0, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        run(toy_decoder, toy_features, beam_size=2, max_len=-1)
    with pytest.raises(ValueError, match="end_id"):
        run(toy_decoder, toy_features, beam_size=2, max_len=3, banned_ids=(END_ID,))
    with pytest.raises(ValueError, match=r"\[B, L, D\]"):
        run(toy_decoder, toy_features[0], beam_size=2, max_len=3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        run(toy_decoder, toy_features, beam_size=2, max_len=3, end_id=99)


def test_empty_batch(toy_decoder):
    out = run(toy_decoder, torch.zeros(0, 4, 5), beam_size=2, max_len=3)
    assert out.tokens.shape == (0, 1) and out.alphas.shape == (0, 1, 4)


def test_unused_import_guard():
    # ToyDecoder must expose the contract interface used above.
    dec = ToyDecoder(vocab=5, dim=2)
    assert hasattr(dec, "init_state") and hasattr(dec, "step")


def test_teacher_forcing_mixed_lengths_equals_one_caption_at_a_time(toy_decoder, toy_features):
    rng = torch.Generator().manual_seed(5)
    lengths = [3, 0, 5, 1, 5, 2]  # words per caption
    width = max(lengths) + 2
    ids = torch.full((len(lengths), width), PAD_ID, dtype=torch.long)
    for i, n in enumerate(lengths):
        words = torch.randint(4, 7, (n,), generator=rng)
        ids[i, : n + 2] = torch.cat([torch.tensor([START_ID]), words, torch.tensor([END_ID])])
    got = teacher_forced_alphas(toy_decoder, toy_features, ids)
    assert got.shape == (len(lengths), width - 1, toy_features.shape[1])
    for i, n in enumerate(lengths):
        alone = teacher_forced_alphas(toy_decoder, toy_features[i : i + 1], ids[i : i + 1, : n + 2])
        torch.testing.assert_close(got[i, : n + 1], alone[0])
        assert (got[i, n + 1 :] == 0).all()  # padding steps are not computed


class _Ungrouped(torch.nn.Module):
    """The real decoder without ``image_state_slots``: one feature copy per beam row."""

    def __init__(self, decoder):
        super().__init__()
        self.inner = decoder

    def init_state(self, features):
        return self.inner.init_state(features)

    def step(self, features, tokens, state):
        return self.inner.step(features, tokens, state)


def _real_decoder(vocab=9, seed=3):
    from ica_captioning.model.decoder import AttentionDecoder

    torch.manual_seed(seed)
    sizes = {"embed_dim": 5, "hidden_dim": 8, "attention_dim": 4, "dropout": 0.0}
    dec = AttentionDecoder(
        vocab_size=vocab, feature_dim=6, **{**section("train")["decoder"], **sizes}
    )
    with torch.no_grad():  # peakier words and a rarer <end>: captions of varied length
        dec.out.weight.mul_(4.0)
        dec.out.bias[END_ID] -= 1.0
    return dec.eval()


@pytest.mark.parametrize(("beam_size", "seed"), [(1, 5), (3, 3)])
def test_real_decoder_shares_image_state_between_beams(beam_size, seed):
    dec = _real_decoder(seed=seed)
    assert dec.image_state_slots  # the grouped path is the one under test
    features = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(2))
    grouped = run(dec, features, beam_size=beam_size, max_len=6)
    ungrouped = run(_Ungrouped(dec), features, beam_size=beam_size, max_len=6)
    assert grouped.token_lists() == ungrouped.token_lists()
    torch.testing.assert_close(grouped.scores, ungrouped.scores)
    torch.testing.assert_close(grouped.alphas, ungrouped.alphas)
    assert len({len(w) for w in grouped.token_lists()}) > 1  # lengths vary: finishing is exercised
    for b in range(features.shape[0]):
        words, score = per_image_beam_search(dec, features[b], beam_size, 6)
        assert grouped.token_lists()[b] == words
        assert grouped.scores[b].item() == pytest.approx(score, abs=1e-4)


def test_bad_image_state_slots_raise(toy_decoder, toy_features):
    toy_decoder.image_state_slots = (5,)
    with pytest.raises(ValueError, match="image_state_slots"):
        run(toy_decoder, toy_features, beam_size=2, max_len=3)


class _TwoHeadDecoder(ToyDecoder):
    """The toy decoder with a second attention head (uniform): step returns ``[R, 2, L]``."""

    def step(self, features, tokens, state):
        logits, alpha, state = super().step(features, tokens, state)
        uniform = torch.full_like(alpha, 1.0 / alpha.shape[-1])
        return logits, torch.stack([alpha, uniform], dim=1), state


def test_multi_head_attention_is_head_averaged_by_every_consumer(toy_features):
    from ica_captioning.decoding.greedy import greedy_decode

    one, two = ToyDecoder(vocab=7, dim=5, seed=3), _TwoHeadDecoder(vocab=7, dim=5, seed=3)
    kw = dict(beam_size=3, max_len=6, start_id=START_ID, end_id=END_ID, pad_id=PAD_ID)
    ref, got = (
        beam_search_features(one, toy_features, **kw),
        beam_search_features(two, toy_features, **kw),
    )
    assert torch.equal(ref.tokens, got.tokens)  # the heads do not change the words
    uniform = 1.0 / toy_features.shape[1]
    words = torch.arange(ref.alphas.shape[1]) < ref.lengths[:, None]  # [B, T] steps with a word
    expected = (ref.alphas + uniform) / 2 * words.unsqueeze(-1)
    torch.testing.assert_close(got.alphas, expected)
    ids = torch.tensor([[START_ID, 4, 5, END_ID]] * toy_features.shape[0])
    tf_one, tf_two = (
        teacher_forced_alphas(one, toy_features, ids),
        teacher_forced_alphas(two, toy_features, ids),
    )
    torch.testing.assert_close(tf_two, (tf_one + uniform) / 2)
    _, g_one, _ = greedy_decode(one, toy_features, max_len=4)
    _, g_two, _ = greedy_decode(two, toy_features, max_len=4)
    torch.testing.assert_close(g_two, (g_one + uniform) / 2)


class _RowCounter(torch.nn.Module):
    """Wraps a decoder and records how many rows each step decodes."""

    def __init__(self, decoder):
        super().__init__()
        self.inner, self.rows = decoder, []
        if hasattr(decoder, "image_state_slots"):
            self.image_state_slots = decoder.image_state_slots

    def init_state(self, features):
        return self.inner.init_state(features)

    def step(self, features, tokens, state):
        self.rows.append(int(tokens.shape[0]))
        return self.inner.step(features, tokens, state)


def _assert_finished_images_leave_and_nothing_changes(decoder, features, beam_size, max_len):
    counter = _RowCounter(decoder)
    together = run(counter, features, beam_size=beam_size, max_len=max_len)
    lengths = [len(w) for w in together.token_lists()]
    # Rows of finished images left: later steps decode fewer rows than B·K.
    n = features.shape[0]
    assert counter.rows[0] == n and max(counter.rows[1:]) <= n * beam_size
    assert all(a >= b for a, b in zip(counter.rows[1:], counter.rows[2:]))
    assert counter.rows[-1] < n * beam_size
    # Reference: each image searched alone, where nothing ever leaves (one image, one exit).
    for b in range(n):
        alone = run(decoder, features[b : b + 1], beam_size=beam_size, max_len=max_len)
        assert together.token_lists()[b] == alone.token_lists()[0]
        torch.testing.assert_close(together.scores[b], alone.scores[0], rtol=1e-6, atol=1e-6)
        m = lengths[b]
        torch.testing.assert_close(
            together.alphas[b, :m], alone.alphas[0, :m], rtol=1e-5, atol=1e-6
        )
        assert (together.alphas[b, m:] == 0).all() and (together.tokens[b, m:] == PAD_ID).all()


@pytest.mark.parametrize(("beam_size", "end_bias"), [(1, 2.0), (3, 3.0)])
def test_finished_images_leave_the_rows_on_a_random_decoder(beam_size, end_bias):
    dec = _real_decoder(seed=4)
    with torch.no_grad():  # <end> likely enough that images finish at different steps
        dec.out.bias[END_ID] += end_bias
    features = torch.randn(12, 4, 6, generator=torch.Generator().manual_seed(7))
    _assert_finished_images_leave_and_nothing_changes(dec, features, beam_size, max_len=8)
    assert (
        len({len(w) for w in run(dec, features, beam_size=beam_size, max_len=8).token_lists()}) > 1
    )
    toy = ToyDecoder(vocab=7, dim=5, seed=3)  # a decoder without image_state_slots
    toy_feats = torch.randn(10, 4, 5, generator=torch.Generator().manual_seed(11))
    _assert_finished_images_leave_and_nothing_changes(toy, toy_feats, beam_size, max_len=6)


@pytest.mark.slow
def test_finished_images_leave_the_rows_on_a_trained_model(tmp_path):
    from tiny_data import make_tiny_dataset, tiny_config, train_tiny

    from ica_captioning.model import load_captioner, preprocess_images

    data = make_tiny_dataset(tmp_path / "tiny", n_train=8, n_val=3)
    bundle, _ = train_tiny(tiny_config(tmp_path, epochs=3, lambda_aux=0.1), data)
    model = load_captioner(bundle)
    paths = data["images"]["file_path"].tolist()
    with torch.no_grad():
        feats = model.encode(preprocess_images(paths, model.image_size, root=data["images_dir"]))
    # The tiny model's best captions are short, but its other beams run on: images leave the
    # rows at different steps (measured: 33, 33, 21, 18, 12, 9 rows).
    _assert_finished_images_leave_and_nothing_changes(model.decoder, feats, 3, max_len=8)
