"""Project dataset types for the Kedro catalog.

:class:`OptionalDataset` reads another pipeline's output only if it was written: the
``transformer`` pipeline puts the Show-Attend-Tell models' rows next to its own in the reports
when those models exist, and runs without them otherwise (conf/base/catalog_transformer.yml).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class OptionalDataset(AbstractDataset[None, Any]):
    """Read-only view of a dataset that loads ``None`` when the dataset does not exist.

    Example (catalog)::

        "{variant}.model_if_trained":
          type: ica_captioning.datasets.OptionalDataset
          dataset:
            type: pickle.PickleDataset
            filepath: data/06_models/{variant}.model.pkl
            versioned: true

    A versioned inner dataset loads its latest version (or ``None`` when it has none).

    Args:
        dataset: the wrapped dataset's configuration (as in the catalog).
        metadata: free-form metadata (Kedro plugins).
    """

    def __init__(
        self, dataset: Mapping[str, Any] | str, metadata: dict[str, Any] | None = None
    ) -> None:
        config = {"type": dataset} if isinstance(dataset, str) else copy.deepcopy(dict(dataset))
        self._config = config
        self._dataset = AbstractDataset.from_config("optional", config)
        self.metadata = metadata

    def load(self) -> Any:
        """The wrapped dataset's data, or ``None`` when it does not exist."""
        return self._dataset.load() if self._dataset.exists() else None

    def save(self, data: None) -> None:
        """Not supported: the wrapped dataset is written by the pipeline that owns it."""
        raise DatasetError("OptionalDataset is read-only; save to the wrapped dataset instead")

    def _exists(self) -> bool:
        # Always there for a run: a missing wrapped dataset reads as None.
        return True

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._config}
