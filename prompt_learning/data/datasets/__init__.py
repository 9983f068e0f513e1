"""Dataset builders by name: each turns a dataset config into ``DatasetSplits``.

The registry is this explicit table; every entry has a config in ``configs/dataset/<name>.yaml``.
Benchmark modules are imported when first used (``"module:function"`` entries).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from prompt_learning.data.datasets.folder import build_folder
from prompt_learning.data.datasets.synthetic import build_synthetic
from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import ConfigurationError

Builder = Callable[[Mapping[str, Any]], DatasetSplits]
BUILDERS: dict[str, Builder | str] = {
    "folder": build_folder,
    "csv": "csv:build_csv",
    "synthetic": build_synthetic,
    "imagenet": "imagenet:build",
    "caltech101": "caltech101:build",
    "oxford_pets": "oxford_pets:build",
    "stanford_cars": "stanford_cars:build",
    "oxford_flowers": "oxford_flowers:build",
    "food101": "food101:build",
    "fgvc_aircraft": "fgvc_aircraft:build",
    "sun397": "sun397:build",
    "dtd": "dtd:build",
    "eurosat": "eurosat:build",
    "ucf101": "ucf101:build",
    "imagenetv2": "imagenet_variants:build_v2",
    "imagenet_sketch": "imagenet_variants:build_sketch",
    "imagenet_a": "imagenet_variants:build_a",
    "imagenet_r": "imagenet_variants:build_r",
}
BENCHMARKS = tuple(name for name in BUILDERS if name not in ("folder", "synthetic", "csv"))


def builder(name: str) -> Builder:
    entry = BUILDERS[name]
    if isinstance(entry, str):
        module, _, function = entry.partition(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return entry


def build_dataset(cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the dataset named by ``cfg["name"]`` (the config's other keys are the builder's options)."""
    name = cfg.get("name")
    if name not in BUILDERS:
        close = difflib.get_close_matches(str(name), BUILDERS, n=3)
        raise ConfigurationError(f"Unknown dataset {name!r}. Did you mean {close}? Available: {sorted(BUILDERS)}.")
    return builder(name)(cfg)
