"""Project settings (see https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Soft merge: an environment (conf/gpu, conf/local) overrides single keys such as
    # `train.device` without erasing the rest of the `train` section.
    "merge_strategy": {"parameters": "soft"},
}
