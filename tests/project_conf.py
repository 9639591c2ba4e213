"""The project's own parameters (conf/), the one home of every default, for tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ica_captioning.params import deep_merge
from ica_captioning.params.conf import load_parameters, model_params  # noqa: F401

PROJECT = Path(__file__).resolve().parents[1]


@functools.cache
def _load(env: str) -> dict[str, Any]:
    return load_parameters(env, PROJECT / "conf")


def conf_params(env: str = "base") -> dict[str, Any]:
    """Every parameter as ``kedro run --env <env>`` sees it (a fresh copy)."""
    return deep_merge(_load(env), {})


def section(name: str, env: str = "base", /, **overrides: Any) -> dict[str, Any]:
    """One section (``train``, ``evaluation`` …) of conf/<env> with single keys overridden."""
    return deep_merge(conf_params(env)[name], overrides)


def encoder_kwargs(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``Encoder`` from conf/base's ``train.encoder`` with overrides.

    As in :func:`model_params`, ``weights: pretrained`` (made by a pipeline run) becomes
    ``none``: the same architecture, randomly initialised.
    """
    enc = model_params().encoder.to_dict()
    enc.pop("standardize")  # a captioner setting, not the encoder's
    return {**enc, **overrides}


def scope_of(project: Path, runtime_params: dict | None = None, env: str | None = None) -> str:
    """The dataset scope (folder in each data layer) of a run of ``project`` with these params."""
    from kedro.config import OmegaConfigLoader

    from ica_captioning import settings
    from ica_captioning.hooks import apply_dataset_scope

    loader = OmegaConfigLoader(
        conf_source=str(project / "conf"),
        env=env,
        runtime_params=runtime_params or {},
        **settings.CONFIG_LOADER_ARGS,
    )
    return apply_dataset_scope(loader)
