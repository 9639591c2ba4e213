"""Dataset scopes: every table derived from a dataset lives under a folder named for it.

A scope is ``<dataset.name>-<12 hex digits>``: the digits hash the ``dataset.*`` parameters and
what the dataset's files are. For a real dataset that is each annotation and instances file's
path, size and modification time (like ``make``: content is not re-read on every run). For the
embedded dataset, whose files the ingestion pipeline writes itself, it is the generator's
configuration (``ingestion.synthetic`` with the seed resolved, and the fingerprint of the
generator's source). Two datasets, or one dataset under other parameters, never share a scope,
so switching datasets never overwrites another one's tables (docs/data.md, "Per-dataset data").
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ica_captioning.data.synthetic import generator_config
from ica_captioning.params import DatasetParams, deep_merge
from ica_captioning.params.conf import load_parameters
from ica_captioning.params.ingestion import SyntheticParams

#: The key that DataFrames written by a run carry in ``DataFrame.attrs`` (kept by Parquet).
SCOPE_ATTR = "dataset_scope"


def _paths(value: Any) -> Iterable[str]:
    """Every path string in a ``dataset.annotations`` / ``dataset.instances`` value."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, str | os.PathLike):
        return [os.fspath(value)]
    return [p for v in value for p in _paths(v)]


def _file_stats(path: str) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of a file, of each JSON file in a folder or glob, or missing."""
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
    elif Path(path).is_dir():
        files = sorted(str(p) for p in Path(path).glob("*.json"))
    else:
        files = [path]
    out = []
    for name in files:
        try:
            stat = os.stat(name)
            out.append([os.path.abspath(name), stat.st_size, stat.st_mtime_ns])
        except OSError:
            out.append([os.path.abspath(name), "missing"])
    return out or [[path, "no files"]]


def dataset_scope(
    dataset: Mapping[str, Any] | DatasetParams,
    synthetic: Mapping[str, Any] | SyntheticParams,
    seed: int,
) -> str:
    """The scope of a dataset: ``<name>-<hash>``.

    Args:
        dataset: ``params:dataset``.
        synthetic: ``params:ingestion.synthetic`` (used when ``dataset.name`` is ``synthetic``).
        seed: ``params:seed`` (the generator's seed when ``synthetic.seed`` is null).

    Returns:
        The scope, safe as a folder name.
    """
    params = DatasetParams.parse(dataset, "dataset")
    identity: dict[str, Any] = {"dataset": params.to_dict()}
    if params.name == "synthetic":
        gen = SyntheticParams.parse(synthetic, "ingestion.synthetic").to_dict()
        gen.pop("num_workers")  # the files do not depend on it
        gen["seed"] = seed if gen["seed"] is None else gen["seed"]
        identity["generator"] = generator_config(**gen)
    else:
        paths = [*_paths(params.annotations), *_paths(params.instances)]
        identity["files"] = [s for p in paths for s in _file_stats(p)]
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return f"{params.name}-{digest.hexdigest()[:12]}"


def table_scope(data: Any) -> str | None:
    """The scope a table was written under (None: not a table, or written before scopes)."""
    attrs = getattr(data, "attrs", None)
    return attrs.get(SCOPE_ATTR) if isinstance(attrs, dict) else None


def check_one_scope(inputs: Mapping[str, Any], scope: str, node: str) -> None:
    """Stop when a node's input tables come from another dataset than this run's.

    Args:
        inputs: the node's inputs by catalog name.
        scope: this run's dataset scope.
        node: the node's name, for the message.

    Raises:
        ValueError: naming the table, its dataset scope and this run's.
    """
    foreign = {
        name: s for name, data in inputs.items() if (s := table_scope(data)) not in (None, scope)
    }
    if foreign:
        name, other = next(iter(foreign.items()))
        ours = [n for n, d in inputs.items() if table_scope(d) == scope]
        with_ours = f" (like {', '.join(ours)})" if ours else ""
        raise ValueError(
            f"node {node!r}: input {name!r} was written for dataset {other!r}, but this run is "
            f"for dataset {scope!r}{with_ours}. The tables of two datasets must not mix: rerun "
            f"the stages that write {sorted(foreign)} with this run's dataset.* parameters."
        )


def current_scope(env: str = "base", params: Mapping[str, Any] | None = None) -> str:
    """The scope ``kedro run --env <env>`` would use, with ``params`` merged like ``--params``.

    Args:
        env: the configuration environment.
        params: nested runtime parameters (``{"dataset": {"name": "flickr8k", ...}}``).
    """
    conf = deep_merge(load_parameters(env), params)
    return dataset_scope(conf["dataset"], conf["ingestion"]["synthetic"], conf["seed"])
