"""Run the ingestion pipeline with the project's real configuration, without the registry.

Builds the catalog and ``params:*`` entries as ``KedroContext`` does (conf/base + env, soft
parameter merge, runtime params, relative catalog paths made absolute against the project root)
and runs ``create_pipeline()`` with a ``SequentialRunner``. Going around the pipeline registry
keeps this test independent of the other stages' pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.context.context import _convert_paths_to_absolute_posix
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from ica_captioning import settings
from ica_captioning.pipelines.ingestion.pipeline import create_pipeline


def _param_entries(name: str, value: Any, out: dict[str, Any]) -> None:
    out[f"params:{name}"] = value
    if isinstance(value, dict):
        for key, sub in value.items():
            _param_entries(f"{name}.{key}", sub, out)


def load_project_config(
    project_path: Path, runtime_params: dict[str, Any] | None = None, env: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(catalog config with absolute paths, parameters) of the project at ``project_path``."""
    loader = OmegaConfigLoader(
        conf_source=str(project_path / "conf"),
        env=env,
        runtime_params=runtime_params or {},
        **settings.CONFIG_LOADER_ARGS,
    )
    catalog_conf = _convert_paths_to_absolute_posix(project_path, loader["catalog"])
    return catalog_conf, loader["parameters"]


def run_ingestion(
    project_path: Path, runtime_params: dict[str, Any] | None = None, env: str | None = None
) -> DataCatalog:
    """Run the ingestion pipeline; returns the catalog (outputs saved where the catalog says)."""
    catalog_conf, params = load_project_config(project_path, runtime_params, env)
    ingestion_names = create_pipeline().datasets()
    catalog = DataCatalog.from_config(
        {k: v for k, v in catalog_conf.items() if k in ingestion_names}
    )
    entries: dict[str, Any] = {"parameters": params}
    for key, value in params.items():
        _param_entries(key, value, entries)
    for key, value in entries.items():
        catalog[key] = value
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog
