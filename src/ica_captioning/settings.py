"""Project settings (see https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from kedro.config import OmegaConfigLoader

from ica_captioning.hooks import DatasetScopeHooks

#: Every run works inside its dataset's scope (ica_captioning.hooks, docs/data.md).
HOOKS = (DatasetScopeHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Soft merge: an environment (conf/gpu, conf/local) overrides single keys such as
    # `train.device` without erasing the rest of the `train` section.
    "merge_strategy": {"parameters": "soft"},
}
