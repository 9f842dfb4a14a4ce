"""Appliance configuration: a TOML file plus `--set` overrides, validated up front.

The schema (sections, keys, docs, limits) lives in `appliance.config.schema`; reading,
validation and rendering live in `appliance.config.loader`.
"""

from appliance.config.loader import (
    EXAMPLE_CONFIG_PATH,
    ConfigError,
    config_to_toml,
    describe_config,
    load_config,
)
from appliance.config.schema import DEFAULT_CONFIG_PATH, Config

# The exit status of a configuration error, for the CLI and the daemon alike: the unit's
# RestartPreventExitStatus, so systemd does not restart what a restart cannot fix.
EXIT_CONFIG = 2

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "EXAMPLE_CONFIG_PATH",
    "EXIT_CONFIG",
    "Config",
    "ConfigError",
    "config_to_toml",
    "describe_config",
    "load_config",
]
