"""Dataset builders by name: each turns a dataset config into ``DatasetSplits``.

The registry is this explicit table; every entry has a config in ``configs/dataset/<name>.yaml``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from prompt_learning.data.datasets.folder import build_folder
from prompt_learning.data.datasets.synthetic import build_synthetic
from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import ConfigurationError

BUILDERS: dict[str, Callable[[Mapping[str, Any]], DatasetSplits]] = {
    "folder": build_folder,
    "synthetic": build_synthetic,
}


def build_dataset(cfg: Mapping[str, Any]) -> DatasetSplits:
    """Build the dataset named by ``cfg["name"]`` (the config's other keys are the builder's options)."""
    name = cfg.get("name")
    if name not in BUILDERS:
        close = difflib.get_close_matches(str(name), BUILDERS, n=3)
        raise ConfigurationError(f"Unknown dataset {name!r}. Did you mean {close}? Available: {sorted(BUILDERS)}.")
    return BUILDERS[name](cfg)
