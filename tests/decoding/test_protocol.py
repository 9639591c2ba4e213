"""Evaluation decoding depends only on the decoder protocol: a non-SAT, multi-head model works."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from _decoding_toys import ToyModel
from PIL import Image

from ica_captioning.decoding.beam_search import beam_search_features
from ica_captioning.decoding.runner import decode_split
from ica_captioning.decoding.teacher_forcing import teacher_forced_alphas
from ica_captioning.model.images import preprocess_images
from ica_captioning.model.protocol import CaptionDecoder, CaptionModel
from ica_captioning.tokens import END_ID, PAD_ID, SPECIAL_WORDS, START_ID, UNK_ID

SIDE = 4  # images are S × S and the toy encoder gives one cell per pixel: G = S, L = S²


class _TwoHeads(torch.nn.Module):
    """Wraps a decoder; its step returns ``[R, 2, L]``: the real map and a uniform head."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def init_state(self, features):
        return self.inner.init_state(features)

    def step(self, features, tokens, state):
        logits, alpha, state = self.inner.step(features, tokens, state)
        return logits, torch.stack([alpha, torch.full_like(alpha, 1 / alpha.shape[-1])], 1), state


class ToyCaptioner(ToyModel):
    """A captioner that is not Show-Attend-Tell: only the protocol's members."""

    image_size = SIDE
    grid_size = SIDE

    def __init__(self, heads: bool):
        super().__init__(vocab=9, num_cells=SIDE * SIDE, dim=5, seed=2)
        if heads:
            self.decoder = _TwoHeads(self.decoder)
        self.vocabulary = {"itos": [*SPECIAL_WORDS, "a", "b", "c", "d", "e"]}


def test_toy_captioner_satisfies_the_protocol():
    model = ToyCaptioner(heads=True)
    assert isinstance(model, CaptionModel) and isinstance(model.decoder, CaptionDecoder)


def test_decode_split_runs_a_multi_head_non_sat_model(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    images = pd.DataFrame({"image_id": [0, 1, 2], "file_path": ["0.png", "1.png", "2.png"]})
    refs = pd.DataFrame(
        {
            "caption_id": [10, 11],
            "image_id": [0, 2],
            "tokens": [["a", "b"], ["c"]],
            "ids": [[START_ID, 4, 5, END_ID], [START_ID, 6, END_ID]],
        }
    )
    settings = dict(beam_size=2, max_len=5, length_penalty=0.0, allow_unk=False, batch_size=2,
                    progress=False, cpu_attention="tiled")  # fmt: skip
    single, multi = ToyCaptioner(heads=False), ToyCaptioner(heads=True)
    gen1, ref1 = decode_split(single, images, refs, tmp_path, **settings)
    gen2, ref2 = decode_split(multi, images, refs, tmp_path, **settings)
    assert gen2["caption"].tolist() == gen1["caption"].tolist()
    assert (gen2["grid_size"] == SIDE).all() and (ref2["grid_size"] == SIDE).all()
    uniform = 1.0 / SIDE**2
    for a, b in zip(gen1["attention"], gen2["attention"]):
        np.testing.assert_allclose(b, (a + uniform) / 2, rtol=1e-5, atol=1e-6)
    for a, b in zip(ref1["attention"], ref2["attention"]):
        np.testing.assert_allclose(b, (a + uniform) / 2, rtol=1e-5, atol=1e-6)
    # The runner's maps are the ones beam search and teacher forcing give on the same features.
    with torch.no_grad():
        feats = single.encode(preprocess_images(["0.png"], SIDE, root=tmp_path))
        beam = beam_search_features(single.decoder, feats, beam_size=2, max_len=5,
                                    start_id=START_ID, end_id=END_ID, pad_id=PAD_ID,
                                    banned_ids=[PAD_ID, START_ID, UNK_ID])  # fmt: skip
        forced = teacher_forced_alphas(single.decoder, feats, torch.tensor([refs["ids"][0]]))
    n = int(beam.lengths[0])
    np.testing.assert_allclose(gen1["attention"][0], beam.alphas[0, :n].reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(ref1["attention"][0], forced[0, :2].reshape(-1), rtol=1e-6)
