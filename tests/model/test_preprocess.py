import numpy as np
import torch
from PIL import Image

from ica_captioning.model import preprocess_images


def test_transparent_pixels_load_as_ingestion_converts_them(tmp_path):
    # Hidden red under alpha 0 must become white, as ingestion's validation converts it.
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[8:24, 8:24] = (0, 0, 255, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    expected = np.full((32, 32, 3), 255, dtype=np.uint8)
    expected[8:24, 8:24] = (0, 0, 255)
    Image.fromarray(expected).save(tmp_path / "b.png")
    got = preprocess_images(["a.png", "b.png"], 32, root=tmp_path)
    assert got.shape == (2, 3, 32, 32)
    torch.testing.assert_close(got[0], got[1])


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    eight = np.rint(values / 257.0).astype(np.uint8)
    Image.fromarray(eight, mode="L").save(tmp_path / "g8.png")
    got = preprocess_images(["g16.png", "g8.png"], 32, root=tmp_path)
    torch.testing.assert_close(got[0], got[1])
