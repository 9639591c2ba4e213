"""Read the project's parameters outside a Kedro run (scripts, benchmarks, notebooks, tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

from ica_captioning.params.base import deep_merge
from ica_captioning.params.train import ModelParams

#: The project root (where ``conf/`` lives) of a source checkout or editable install.
PROJECT_ROOT = Path(__file__).resolve().parents[3]


def load_parameters(env: str = "base", conf_source: str | os.PathLike | None = None) -> dict:
    """Every parameter as ``kedro run --env <env>`` sees it (soft-merged over ``conf/base``).

    Args:
        env: ``base`` (conf/base alone), ``gpu``, ``local`` …
        conf_source: the ``conf`` folder (default: the project's own).

    Returns:
        A plain nested dict (``{"train": {...}, "evaluation": {...}, ...}``).
    """
    # Imported here: settings imports the project hooks, which import this module.
    from ica_captioning import settings

    source = Path(conf_source) if conf_source is not None else PROJECT_ROOT / "conf"
    if not (source / "base").is_dir():
        raise FileNotFoundError(f"no conf/base folder under {source}")
    args: dict[str, Any] = {
        k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"
    }
    loader = OmegaConfigLoader(conf_source=str(source), env=env, **args)
    return dict(loader["parameters"])


def model_params(
    encoder: dict[str, Any] | None = None,
    decoder: dict[str, Any] | None = None,
    env: str = "base",
    *,
    architecture: str | None = None,
    transformer: dict[str, Any] | None = None,
) -> ModelParams:
    """The project's model settings with single keys overridden.

    Args:
        encoder: keys of ``train.encoder`` to change (``{"grid_size": 7}``).
        decoder: keys of ``train.decoder`` to change.
        env: the configuration environment to start from.
        architecture: ``sat`` | ``transformer`` instead of ``train.architecture``.
        transformer: keys of ``train.transformer`` to change.

    ``weights: pretrained`` names weights that only a pipeline run makes (the pretraining stage);
    here it becomes ``none`` — the same architecture, randomly initialised — unless ``encoder``
    sets the weights (e.g. ``{"weights": bundle["path"]}`` of a ``pretrained_encoder``).
    """
    train = load_parameters(env)["train"]
    if train["encoder"]["weights"] == "pretrained":
        train["encoder"]["weights"] = "none"
    return ModelParams.of(
        {
            "architecture": architecture or train["architecture"],
            "encoder": deep_merge(train["encoder"], encoder),
            "decoder": deep_merge(train["decoder"], decoder),
            "transformer": deep_merge(train["transformer"], transformer),
        }
    )
