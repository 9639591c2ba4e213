from __future__ import annotations

import pytest
from coco_toys import build_toy


@pytest.fixture
def toy(tmp_path):
    return build_toy(tmp_path)
