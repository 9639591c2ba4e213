"""Encoder/decoder shapes, the step API, masking of padded steps, weights, bundle round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from project_conf import encoder_kwargs, model_params

from ica_captioning.decoding.greedy import greedy_decode
from ica_captioning.losses.training import combine, loss_terms
from ica_captioning.model import build_captioner, load_captioner, make_bundle, preprocess_images
from ica_captioning.model.encoder import Encoder

V = 11
CFG = model_params(
    encoder={"backbone": "resnet18", "layer": "layer1", "grid_size": 4, "image_size": 32},
    decoder={"embed_dim": 8, "hidden_dim": 16, "attention_dim": 8, "dropout": 0.0},
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_captioner(CFG, V).eval()


def test_encoder_shapes_follow_layer_and_grid():
    x = torch.randn(2, 3, 64, 64)
    enc = Encoder(**encoder_kwargs(backbone="resnet18", layer="layer2", grid_size=3))
    out = enc(x)
    assert out.shape == (2, 9, 128)  # layer2 of ResNet-18 has 128 channels
    # Reference: trunk output pooled by hand (mean over each 8x8 -> 3x3 adaptive window).
    with torch.no_grad():
        trunk = enc.blocks[1](enc.blocks[0](enc.stem(x)))  # [2, 128, 8, 8]
        ref = torch.nn.functional.adaptive_avg_pool2d(trunk, 3).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    assert (
        Encoder(**encoder_kwargs(backbone="resnet50", layer="layer1", grid_size=2)).out_dim == 256
    )
    with pytest.raises(ValueError, match="layer"):
        Encoder(**encoder_kwargs(layer="layer9"))
    with pytest.raises(ValueError, match="backbone"):
        Encoder(**encoder_kwargs(backbone="not_a_model"))


def test_decoder_forward_shapes_and_step_api(model):
    feats = model.encode(torch.randn(3, 3, 32, 32))
    assert feats.shape == (3, 16, 64)
    inputs = torch.tensor([[1, 4, 5, 8], [1, 4, 6, 2], [1, 7, 0, 0]])
    logits, alphas = model(inputs=inputs, features=feats)
    assert logits.shape == (3, 4, V) and alphas.shape == (3, 4, 16)
    # Steps fed <end> (id 2) or <pad> (id 0) predict padding: skipped, zeros.
    valid = (inputs != 0) & (inputs != 2)  # [3, 4]
    torch.testing.assert_close(alphas.sum(-1), valid.float())
    assert (logits[~valid] == 0).all()
    # The step API reproduces the teacher-forced forward pass step by step.
    state = model.decoder.init_state(feats)
    assert isinstance(state, tuple) and all(s.shape[0] == 3 for s in state)
    for t in range(4):
        step_logits, alpha, state = model.decoder.step(feats, inputs[:, t], state)
        assert step_logits.shape == (3, V) and alpha.shape == (3, 16)
        rows = valid[:, t]
        torch.testing.assert_close(step_logits[rows], logits[rows, t])
        torch.testing.assert_close(alpha[rows], alphas[rows, t])
    # images path == features path
    images = torch.randn(2, 3, 32, 32)
    a = model(images=images, inputs=inputs[:2])[0]
    b = model(features=model.encode(images), inputs=inputs[:2])[0]
    torch.testing.assert_close(a, b)


def test_padded_steps_are_masked(model):
    """Padding never changes the valid steps' outputs nor the loss."""
    feats = model.encode(torch.randn(2, 3, 32, 32))
    ids = torch.tensor([[1, 4, 5, 8, 2], [1, 7, 2, 0, 0]])
    logits, alphas = model(inputs=ids[:, :-1], features=feats)
    # Garbage in the padded positions of caption 1, and two extra padded columns.
    ids2 = torch.tensor([[1, 4, 5, 8, 2, 0, 0], [1, 7, 2, 9, 9, 9, 9]])
    targets2 = ids2[:, 1:].clone()
    targets2[1, 2:] = 0  # targets after <end> are padding
    logits2, alphas2 = model(inputs=ids2[:, :-1], features=feats)
    torch.testing.assert_close(logits2[0, :4], logits[0])
    torch.testing.assert_close(logits2[1, :2], logits[1, :2])
    t1 = loss_terms(logits, alphas, ids[:, 1:], None, None, False, "log")
    t2 = loss_terms(logits2, alphas2, targets2, None, None, False, "log")
    l1, _ = combine(t1, 1.0, 0.0)
    l2, _ = combine(t2, 1.0, 0.0)
    torch.testing.assert_close(l1, l2)
    assert t1.n_tokens == 4 + 2
    # Reference: per-caption unpadded computation.
    ce, dsr = 0.0, 0.0
    for b, n in ((0, 4), (1, 2)):
        lp = torch.log_softmax(logits[b, :n], -1)
        ce -= lp[torch.arange(n), ids[b, 1 : n + 1]].sum()
        dsr += ((1 - alphas[b, :n].sum(0)) ** 2).sum()
    torch.testing.assert_close(l1, ce / 6 + dsr / (2 * 16))


def test_greedy_decode_matches_stepwise_argmax(model):
    feats = model.encode(torch.randn(3, 3, 32, 32))
    toks, alphas, lens = greedy_decode(model.decoder, feats, max_len=5)
    assert alphas.shape[:2] == toks.shape and alphas.shape[2] == 16
    for b in range(3):
        state = model.decoder.init_state(feats[b : b + 1])
        tok = torch.tensor([1])
        ref = []
        for _ in range(toks.shape[1]):
            logits, _, state = model.decoder.step(feats[b : b + 1], tok, state)
            tok = logits.argmax(-1)
            ref.append(int(tok))
            if ref[-1] == 2:
                break
        n = ref.index(2) if 2 in ref else len(ref)
        assert int(lens[b]) == n
        assert toks[b, :n].tolist() == ref[:n]


def test_weights_from_local_file(tmp_path):
    torch.manual_seed(123)
    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    enc = Encoder(**encoder_kwargs(weights=str(path), layer="layer2", grid_size=2))
    torch.testing.assert_close(enc.blocks[1][0].conv1.weight, full.layer2[0].conv1.weight)
    torch.testing.assert_close(enc.stem[0].weight, full.conv1.weight)
    # A random-init encoder differs, so the file really was loaded.
    other = Encoder(
        **encoder_kwargs(backbone="resnet18", weights="none", layer="layer2", grid_size=2)
    )
    assert not torch.equal(other.stem[0].weight, full.conv1.weight)
    with pytest.raises(ValueError, match="lacks"):
        torch.save({"conv1.weight": full.conv1.weight}, tmp_path / "bad.pth")
        Encoder(**encoder_kwargs(weights=str(tmp_path / "bad.pth")))
    with pytest.raises(FileNotFoundError):
        Encoder(**encoder_kwargs(weights=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="unknown weights"):
        Encoder(**encoder_kwargs(backbone="resnet18", weights="NOT_AN_ENUM"))


def test_fine_tuning_switch():
    enc = Encoder(**encoder_kwargs(layer="layer3", fine_tune_blocks=1))
    assert not enc.stem[1].training  # BatchNorm frozen from construction on
    trainable = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in enc.named_parameters()
        if p.requires_grad
    }
    assert trainable == {"blocks.2"}
    assert not any(
        p.requires_grad for p in Encoder(**encoder_kwargs(fine_tune_blocks=0)).parameters()
    )
    enc.train()
    assert not enc.stem[1].training  # BatchNorm stays frozen


def test_bundle_round_trip_and_preprocessing(model, tmp_path):
    vocab = {"itos": [f"w{i}" for i in range(V)], "min_freq": 1, "max_len": 5}
    bundle = make_bundle(model, {**CFG.to_dict(), "lambda_aux": 0.1}, vocab)
    assert set(bundle) == {"state_dict", "config", "vocabulary"}
    loaded = load_captioner(bundle)
    assert loaded.vocabulary == vocab
    pix = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pix).save(tmp_path / "x.png")
    x_path = preprocess_images(["x.png"], model.image_size, root=tmp_path)
    x_pil = preprocess_images([Image.fromarray(pix)], model.image_size)
    assert x_path.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x_path, x_pil)
    # Reference normalisation by hand.
    ref = np.asarray(Image.fromarray(pix).resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x_path[0].permute(1, 2, 0).numpy(), ref, atol=1e-5)
    inputs = torch.tensor([[1, 4, 5]])
    torch.testing.assert_close(
        loaded(images=x_path, inputs=inputs), model(images=x_path, inputs=inputs)
    )
    with pytest.raises(ValueError, match="lacks"):
        load_captioner({"state_dict": {}, "config": CFG.to_dict()})
    with pytest.raises(OSError, match="cannot read image"):
        preprocess_images(["nope.png"], 32, root=tmp_path)
