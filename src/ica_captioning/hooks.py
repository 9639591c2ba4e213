"""Project hooks: every run works inside its dataset's scope (docs/data.md, "Per-dataset data")."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from ica_captioning.data.scope import SCOPE_ATTR, check_one_scope, dataset_scope

logger = logging.getLogger(__name__)


def apply_dataset_scope(loader: Any) -> str:
    """Give a config loader's catalog the scope of its parameters' dataset.

    Args:
        loader: Kedro's ``OmegaConfigLoader`` of the run (its runtime parameters included).

    Returns:
        The scope, now the loader's runtime parameter ``dataset_scope``.
    """
    params = loader["parameters"]
    scope = dataset_scope(params["dataset"], params["ingestion"]["synthetic"], params["seed"])
    loader.runtime_params = {**(loader.runtime_params or {}), "dataset_scope": scope}
    return scope


class DatasetScopeHooks:
    """Put a run's tables under its dataset's scope and keep two datasets' tables apart.

    * After the context is created, the scope of the run's ``dataset.*`` parameters is computed
      and given to the catalog as the runtime parameter ``dataset_scope``: every dataset-derived
      catalog entry has it in its path (``data/03_primary/${runtime_params:dataset_scope}/…``).
    * Every DataFrame a node writes carries the scope in ``DataFrame.attrs`` (Parquet keeps it).
    * Before a node runs, an input table written under another scope stops the run.
    """

    def __init__(self) -> None:
        self.scope: str | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        """Compute the scope from the run's parameters and hand it to the catalog."""
        loader = context.config_loader
        params = loader["parameters"]
        self.scope = dataset_scope(
            params["dataset"], params["ingestion"]["synthetic"], params["seed"]
        )
        loader.runtime_params = {**(loader.runtime_params or {}), "dataset_scope": self.scope}
        logger.info("Dataset scope %s: its tables live in data/*/%s/", self.scope, self.scope)

    @hook_impl
    def before_node_run(self, node: Any, inputs: dict[str, Any]) -> None:
        """Stop a node whose input tables come from another dataset."""
        if self.scope is not None:
            check_one_scope(inputs, self.scope, node.name)

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any) -> None:
        """Stamp the run's scope on a DataFrame before it is written."""
        attrs = getattr(data, "attrs", None)
        if self.scope is not None and isinstance(attrs, dict):
            attrs[SCOPE_ATTR] = self.scope
