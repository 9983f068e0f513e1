"""Structured-config schemas, registered with Hydra's ConfigStore under ``schema/<group>/<name>``.

Each group YAML starts with ``defaults: [/schema/<group>/<name>@_here_, _self_]``, so a misspelt key
fails at composition with ``Key 'n_ctxx' not in 'CoOpConfig'``. Method schemas come from each
method's own ``Config`` dataclass (found by ``list_methods()``), so adding a method edits nothing here.
Schemas live in their own group so that "Available options" for ``method=`` lists only real methods.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from prompt_learning.config.location import config_dir
from prompt_learning.config.run_dirs import absolute_path, config_hash, current_sweep_id
from prompt_learning.methods import list_methods
from prompt_learning.registry import import_plugins
from prompt_learning.run_spec import (
    BackboneConfig,
    BenchmarkDatasetConfig,
    CsvDatasetConfig,
    DataConfig,
    FolderDatasetConfig,
    OptimConfig,
    ProtocolConfig,
    SyntheticDatasetConfig,
    TrainerConfig,
)

METHOD_CONFIGS = config_dir() / "method"  # the packaged configs of an installed wheel, else the checkout's


@dataclass
class LoggerConfig:
    """The built-in logger by ``name`` (csv.yaml, wandb.yaml, ...), plus any Lightning logger as a named
    ``_target_`` entry of ``targets`` (tensorboard.yaml, mlflow.yaml). Built by engine/loggers.py."""

    name: str = "none"  # csv | wandb | none; a targets-only option (logger=tensorboard) sets none
    project: str = "prompt_learning"
    mode: str = "online"  # wandb: online | offline
    group: str | None = None
    targets: dict = field(default_factory=dict)  # name -> {_target_: <Logger class>, kwargs}; null entry: off


SCHEMAS = {
    "backbone": {"backbone": BackboneConfig},
    "dataset": {"synthetic": SyntheticDatasetConfig, "folder": FolderDatasetConfig, "csv": CsvDatasetConfig,
                "benchmark": BenchmarkDatasetConfig},
    "protocol": {"protocol": ProtocolConfig},
    "optim": {"sgd": OptimConfig},
    "trainer": {"trainer": TrainerConfig},
    "data": {"data": DataConfig},
    "logger": {"logger": LoggerConfig},
}


def path_label(path: str | None) -> str:
    """``<base name>-<6 hex digits of the absolute path's SHA-1>`` (``none`` without a path): readable, and
    different for two folders that share a base name (``.../pets/images`` and ``.../cars/images``)."""
    if path in (None, "", "None"):
        return "none"
    absolute = Path(str(path)).expanduser().absolute()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", absolute.name)  # no spaces or shell characters in a directory name
    return f"{readable}-{hashlib.sha1(str(absolute).encode()).hexdigest()[:6]}"


def register_configs() -> None:
    """Store every schema and the resolvers (idempotent); call before Hydra composes ``configs/``."""
    OmegaConf.register_new_resolver("path_label", path_label, replace=True)
    OmegaConf.register_new_resolver("basename", path_label, replace=True)  # its old name, for users' own YAMLs
    OmegaConf.register_new_resolver("config_hash", config_hash, replace=True)
    OmegaConf.register_new_resolver("abspath", absolute_path, replace=True)
    OmegaConf.register_new_resolver("current_sweep", current_sweep_id, replace=True)
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)
    for name, cls in list_methods().items():
        store.store(group="schema/method", name=name, node=cls.Config)
        if not (METHOD_CONFIGS / f"{name}.yaml").is_file():  # a plugin's method: method=<name> needs no YAML
            node = OmegaConf.structured(cls.Config)
            node.name = name
            store.store(group="method", name=name, node=node)


def plugins_in(overrides: Sequence[str]) -> list[str]:
    """The modules named by a ``plugins=...`` command-line override (``plugins=a`` or ``plugins=[a,b]``)."""
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "plugins":
            return [p.strip().strip("'\"") for p in value.strip().strip("[]").split(",") if p.strip()]
    return []


def import_plugins_of(overrides: Sequence[str]) -> None:
    """Import the plugins an override names and store their schemas, before Hydra composes: their methods,
    datasets and protocols must be known to the composition."""
    if plugins_in(overrides):
        import_plugins(plugins_in(overrides))
        register_configs()
