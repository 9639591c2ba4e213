"""The project's own parameters (conf/), the one home of every default, for tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

from ica_captioning import settings
from ica_captioning.params import deep_merge

PROJECT = Path(__file__).resolve().parents[1]


@functools.cache
def _load(env: str) -> dict[str, Any]:
    args = {k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = OmegaConfigLoader(conf_source=str(PROJECT / "conf"), env=env, **args)
    return dict(loader["parameters"])


def conf_params(env: str = "base") -> dict[str, Any]:
    """Every parameter as ``kedro run --env <env>`` sees it (a fresh copy)."""
    return deep_merge(_load(env), {})


def section(name: str, env: str = "base", **overrides: Any) -> dict[str, Any]:
    """One section (``train``, ``evaluation`` …) of conf/<env> with single keys overridden."""
    return deep_merge(conf_params(env)[name], overrides)


def model_params(encoder: dict | None = None, decoder: dict | None = None):
    """conf/base's encoder and decoder settings with single keys overridden (``ModelParams``)."""
    from ica_captioning.params import ModelParams

    train = section("train")
    return ModelParams.of(
        {
            "encoder": deep_merge(train["encoder"], encoder),
            "decoder": deep_merge(train["decoder"], decoder),
        }
    )


def encoder_kwargs(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments of ``Encoder`` from conf/base's ``train.encoder`` with overrides."""
    enc = section("train")["encoder"]
    enc.pop("standardize")  # a captioner setting, not the encoder's
    return {**enc, **overrides}
