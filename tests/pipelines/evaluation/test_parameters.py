from pathlib import Path

from kedro.config import OmegaConfigLoader

from ica_captioning import settings
from ica_captioning.pipelines.evaluation.nodes import DEFAULTS

PROJECT = Path(__file__).resolve().parents[3]


def _evaluation_params(env: str) -> dict:
    args = {k: v for k, v in settings.CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = OmegaConfigLoader(conf_source=str(PROJECT / "conf"), env=env, **args)
    return loader["parameters"]["evaluation"]


def test_code_defaults_equal_base_parameters():
    # A key missing from a user's configuration falls back to DEFAULTS: they must agree.
    assert _evaluation_params("base") == DEFAULTS


def test_gpu_environment_changes_single_keys():
    base, gpu = _evaluation_params("base"), _evaluation_params("gpu")
    assert gpu["device"] == "cuda"
    changed = {k for k in base if base[k] != gpu[k]}
    assert changed == {"device", "batch_size", "beam_size", "progress"}
