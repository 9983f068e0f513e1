"""Hydra glue: structured-config schemas and config composition for scripts and tests."""

from prompt_learning.config.compose import CONFIG_DIR, check_overrides, compose_config, exit_on_user_error
from prompt_learning.config.schema import register_configs

__all__ = ["CONFIG_DIR", "check_overrides", "compose_config", "exit_on_user_error", "register_configs"]
