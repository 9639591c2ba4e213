from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The tiny COCO fixtures live with the detection tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detection"))

from coco_toys import build_toy  # noqa: E402


@pytest.fixture
def toy(tmp_path):
    return build_toy(tmp_path)
