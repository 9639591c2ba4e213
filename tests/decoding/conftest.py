"""Fixtures for decoding tests."""

import pytest
import torch
from _decoding_toys import ToyDecoder


@pytest.fixture
def toy_decoder():
    return ToyDecoder(vocab=7, dim=5, seed=3)


@pytest.fixture
def toy_features():
    return torch.randn(6, 4, 5, generator=torch.Generator().manual_seed(11))
