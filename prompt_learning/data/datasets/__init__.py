"""Dataset builders by name: each turns a dataset config into ``DatasetSplits``.

Every entry is registered explicitly below (outside code calls ``register_dataset`` the same way) and has
a config in ``configs/dataset/<name>.yaml``. Benchmark modules are imported when first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from prompt_learning.data.datasets.folder import build_folder
from prompt_learning.data.datasets.synthetic import build_synthetic
from prompt_learning.data.types import DatasetSplits
from prompt_learning.registry import Registry

Builder = Callable[[Mapping[str, Any]], DatasetSplits]
DATASETS: Registry[Builder] = Registry("dataset")
register_dataset = DATASETS.register
"""``register_dataset("name", builder)``: ``dataset=name`` (with a ``configs/dataset/<name>.yaml``) builds
``DatasetSplits`` from the dataset config by calling ``builder(cfg)``; outside code registers the same way."""


class LazyBuilder:
    """A built-in benchmark's builder, imported on first use (``module:function`` in this package)."""

    def __init__(self, target: str) -> None:
        self.module, _, self.function = target.partition(":")

    def load(self) -> Builder:
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.function)

    def __call__(self, cfg: Mapping[str, Any]) -> DatasetSplits:
        return self.load()(cfg)


register_dataset("folder", build_folder)
register_dataset("synthetic", build_synthetic)
register_dataset("csv", LazyBuilder("csv:build_csv"))
for _name, _target in {"imagenet": "imagenet:build", "caltech101": "caltech101:build",
                       "oxford_pets": "oxford_pets:build", "stanford_cars": "stanford_cars:build",
                       "oxford_flowers": "oxford_flowers:build", "food101": "food101:build",
                       "fgvc_aircraft": "fgvc_aircraft:build", "sun397": "sun397:build", "dtd": "dtd:build",
                       "eurosat": "eurosat:build", "ucf101": "ucf101:build",
                       "imagenetv2": "imagenet_variants:build_v2", "imagenet_sketch": "imagenet_variants:build_sketch",
                       "imagenet_a": "imagenet_variants:build_a", "imagenet_r": "imagenet_variants:build_r"}.items():
    register_dataset(_name, LazyBuilder(_target))


def builder(name: str) -> Builder:
    entry = DATASETS.get(name)
    return entry.load() if isinstance(entry, LazyBuilder) else entry


def build_dataset(cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the dataset named by ``cfg["name"]`` (the config's other keys are the builder's options)."""
    return builder(str(cfg.get("name")))(cfg)
