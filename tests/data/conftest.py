from __future__ import annotations

from pathlib import Path

import pytest
from project_conf import section

from ica_captioning.data.synthetic import generate_dataset

SMALL = {"num_images": 30, "image_size": 64, "seed": 7}


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> tuple[Path, dict]:
    """A 30-image embedded dataset (24/3/3), generated once for the data tests."""
    out = tmp_path_factory.mktemp("synthetic")
    options = section("ingestion")["synthetic"] | SMALL | {"polygon_fraction": 0.5}
    summary = generate_dataset(out, **options)
    return out, summary
