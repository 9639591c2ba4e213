"""Run stage pipelines with the project's real configuration, as ``KedroContext`` builds it.

(conf/base + env, soft parameter merge, runtime params, catalog paths made absolute against the
project root; ``create_pipeline()`` run by a ``SequentialRunner``.) Going around the pipeline
registry keeps these tests independent of the other stages' pipelines.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.context.context import _convert_paths_to_absolute_posix
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner
from project_conf import scope_of  # noqa: F401  (re-exported for the tests)

from ica_captioning import settings
from ica_captioning.hooks import apply_dataset_scope

PROJECT = Path(__file__).resolve().parents[3]


def _param_entries(name: str, value: Any, out: dict[str, Any]) -> None:
    out[f"params:{name}"] = value
    if isinstance(value, dict):
        for key, sub in value.items():
            _param_entries(f"{name}.{key}", sub, out)


def load_config(
    project: Path, runtime_params: dict[str, Any] | None = None, env: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(catalog config with absolute paths, parameters)."""
    loader = OmegaConfigLoader(
        conf_source=str(project / "conf"),
        env=env,
        runtime_params=runtime_params or {},
        **settings.CONFIG_LOADER_ARGS,
    )
    apply_dataset_scope(loader)  # as the project's hook does in a Kedro session
    return _convert_paths_to_absolute_posix(project, loader["catalog"]), loader["parameters"]


def run_pipeline(
    project: Path,
    pipeline: Pipeline,
    runtime_params: dict[str, Any] | None = None,
    env: str | None = None,
) -> DataCatalog:
    """Run ``pipeline`` against the project's catalog; returns the catalog."""
    catalog_conf, params = load_config(project, runtime_params, env)
    names = pipeline.datasets()
    catalog = DataCatalog.from_config({k: v for k, v in catalog_conf.items() if k in names})
    entries: dict[str, Any] = {"parameters": params}
    for key, value in params.items():
        _param_entries(key, value, entries)
    for key, value in entries.items():
        catalog[key] = value
    SequentialRunner().run(pipeline, catalog)
    return catalog


def copy_project(tmp_path: Path) -> Path:
    """The project's conf and pyproject in ``tmp_path`` with an empty data folder."""
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path
