"""Compose ``configs/`` without ``@hydra.main`` (demo, tests) and check overrides before Hydra sees them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from prompt_learning.config.location import config_dir
from prompt_learning.config.schema import import_plugins_of, register_configs
from prompt_learning.errors import ConfigurationError
from prompt_learning.registry import did_you_mean
from prompt_learning.user_errors import exit_on_user_error  # noqa: F401  (re-exported for the scripts)

CONFIG_DIR = config_dir()  # the packaged configs of an installed wheel, else the checkout's configs/


def compose_config(overrides: Sequence[str] = (), config_name: str = "train", config_dir: Path = CONFIG_DIR
                   ) -> DictConfig:
    """The config ``scripts/train.py`` would run with these command-line overrides."""
    register_configs()
    import_plugins_of(overrides)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def check_overrides(args: Sequence[str], config_name: str = "train") -> None:
    """Name a misspelt override, with close matches and the valid keys, before Hydra (whose own message
    suggests ``+key=value``, which the schemas refuse inside a group and nothing reads at the top level):
    ``group.key=value`` (``method.n_ctxx=4``) and a plain top-level ``key=value`` (``shot=4`` for
    ``shots=4``); and refuse ``+name=value`` for a new top-level key, which no code would read."""
    import_plugins_of(args)
    plain, dotted, appended = [], [], []
    groups = {d.name for d in CONFIG_DIR.iterdir() if d.is_dir()}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith("-") or key.startswith(("~", "hydra.", "+hydra", "++hydra")):
            continue
        if key.startswith("+"):
            name = key.lstrip("+")
            if "." not in name and "/" not in name and name not in groups:
                appended.append(name)  # a new top-level key: nothing would read it
            continue
        (dotted if "." in key else plain).append((key, value))
    try:  # group choices and top-level keys as given (first value of a multirun sweep)
        cfg = compose_config([f"{k}={v.split(',')[0]}" for k, v in plain], config_name)
    except Exception:
        cfg = None  # Hydra reports unknown options itself, with the list of choices
        _refuse_unknown_top_level_keys([k for k, _ in plain], groups, config_name)
    if appended:
        top = sorted(str(k) for k in cfg) if cfg is not None else sorted(groups)
        key = appended[0]
        hint = did_you_mean(key, top, quote=False)
        raise ConfigurationError(f"Unknown top-level config key {key!r} (added with '+'; nothing reads it).{hint} "
                                 f"Top-level keys: {top}.")
    if cfg is None:
        return
    for key, _ in dotted:
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key)
        if isinstance(parent, DictConfig) and leaf in parent:
            continue
        valid = sorted(str(k) for k in parent) if isinstance(parent, DictConfig) else []
        hint = did_you_mean(leaf, valid, prefix=f"{parent_key}.", quote=False)
        raise ConfigurationError(f"Unknown config key {key!r}.{hint} Valid keys of {parent_key!r}: {valid}.")


def _refuse_unknown_top_level_keys(keys: Sequence[str], groups: set[str], config_name: str) -> None:
    """After the overrides failed to compose: name a plain ``key=value`` whose key is neither a top-level key
    of the default config nor a config group (``shot=4``), with close matches, instead of Hydra's advice to
    append it with ``+``, which :func:`check_overrides` refuses."""
    unknown = [k for k in keys if "/" not in k and k not in groups]
    if not unknown:
        return
    try:
        top = {str(k) for k in compose_config([], config_name)}
    except Exception:
        return  # the default config itself does not compose: Hydra's own message says why
    valid = sorted(top | (groups - {"hydra"}))
    for key in unknown:
        if key not in top:
            hint = did_you_mean(key, valid, quote=False)
            raise ConfigurationError(f"Unknown config key {key!r}.{hint} Top-level keys and config groups: {valid}.")
