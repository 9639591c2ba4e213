"""Project dataset types of the catalog (``ica_captioning.datasets``)."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, DatasetError, Version
from kedro_datasets.pickle import PickleDataset

from ica_captioning.datasets import OptionalDataset


def test_optional_dataset_reads_the_latest_version_or_none(tmp_path):
    path = str(tmp_path / "model.pkl")
    config = {"type": "pickle.PickleDataset", "filepath": path, "versioned": True}
    optional = OptionalDataset(config)
    assert optional.exists() and optional.load() is None  # nothing saved yet
    # Explicit save versions: two saves within one millisecond would get the same time-stamped
    # version (Kedro's resolution) and the second would fail (seen in CI).
    for value, stamp in (
        ({"v": 1}, "2026-01-01T00.00.00.001Z"),
        ({"v": 2}, "2026-01-01T00.00.00.002Z"),
    ):
        PickleDataset(filepath=path, version=Version(None, stamp)).save(value)
    assert optional.load() == {"v": 2}
    with pytest.raises(DatasetError, match="read-only"):
        optional.save({"v": 3})
    # From the catalog's configuration, as conf/base/catalog_transformer.yml declares it.
    catalog = DataCatalog.from_config(
        {"m": {"type": "ica_captioning.datasets.OptionalDataset", "dataset": config}}
    )
    assert catalog.load("m") == {"v": 2}
    assert OptionalDataset({**config, "filepath": str(tmp_path / "none.pkl")}).load() is None
