"""Run and sweep directory names: readable choices plus a short hash of everything else a run computes.

``paths.run_dir`` is ``<protocol>/<dataset>/<method>/<backbone>/shots_<K>/seed_<s>-<hash>``. The hash is the
first 8 hex digits of the run fingerprint (the one results.json records), so two configs that compute
different things never share a directory, whatever launched them (plain CLI, multirun, a W&B agent, Optuna,
submitit), and the same config always comes back to its own directory, where it resumes or is skipped.
No path and no override text is ever part of a directory name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SWEEP_ID_ENV = "PL_SWEEP_ID"


def config_hash(*, _root_: DictConfig) -> str:
    """``${config_hash:}``: the first 8 hex digits of the fingerprint of the config it is resolved in.

    Only the sections that enter the fingerprint are resolved (never ``paths``, which holds the run directory
    itself, nor ``hydra`` or the loggers), so the resolver does not depend on where the run writes.
    """
    from prompt_learning.engine.bookkeeping import NOT_IN_FINGERPRINT, computed_settings, run_fingerprint
    from prompt_learning.engine.loggers import training_callbacks

    container: dict[str, Any] = {}
    for key in _root_:
        if key in NOT_IN_FINGERPRINT:
            continue
        node = _root_[key]
        container[str(key)] = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    callbacks = _root_.get("callbacks")
    if isinstance(callbacks, DictConfig):  # only the callbacks that change a result, resolved one by one
        raw = OmegaConf.to_container(callbacks, resolve=False)
        container["callbacks"] = {name: OmegaConf.to_container(callbacks[name], resolve=True)
                                  for name in training_callbacks(raw)}
    return run_fingerprint(computed_settings(container))[:8]


def absolute_path(path: str) -> str:
    """``${abspath:<path>}``: the absolute form of a path relative to the current directory."""
    return str(Path(str(path)).expanduser().absolute())


def sweep_id(config_name: str, task_overrides: list[str], sweeper_params: dict[str, Any]) -> str:
    """A sweep's identity: 8 hex digits of its command (the config name, the overrides as given and the
    sweeper's parameters). Relaunching the same command gives the same id, so a continued sweep keeps its
    directory and its points, skipped ones included."""
    text = json.dumps({"config": config_name, "overrides": sorted(task_overrides), "params": sweeper_params},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def current_sweep_id() -> str | None:
    """``${current_sweep:}``: the id of the multirun this process is running (``None`` outside a sweep)."""
    return os.environ.get(SWEEP_ID_ENV) or None
