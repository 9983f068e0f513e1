"""Compose ``configs/`` without ``@hydra.main`` (demo, tests) and check overrides, their keys and their values,
before Hydra sees them (docs/validation.md)."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from prompt_learning.config.location import config_dir
from prompt_learning.config.schema import import_plugins_of, register_configs
from prompt_learning.errors import ConfigurationError, PromptLearningError
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
    ``shots=4``); refuse ``+name=value`` for a new top-level key, which no code would read; then check every
    value of the run(s) they describe (:func:`check_values`), so that a refused config writes nothing."""
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
    check_values(args, config_name)


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


def check_values(args: Sequence[str], config_name: str = "train") -> None:
    """Check the values of the run(s) ``args`` describe before Hydra creates any directory, with the spec's
    own checks (``RunSpec.from_container``, then the logger and callbacks sections).

    A single run is refused with the spec's error. A multirun (comma lists, ``range`` / ``choice`` sweeps,
    the ``hydra.sweeper.params`` of a ``sweep=`` preset, both ends of an Optuna ``interval``) is checked one
    swept value at a time, the other swept keys at their first value: when every checked point is invalid,
    nothing runs and the error says why; when only some are, a warning names them and the sweep runs (those
    points fail, each with its failed.json). What does not parse, compose or resolve is left to Hydra and to
    the run, which report it themselves."""
    if config_name != "train":
        return
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
        swept = {o.key_or_group: o for o in parsed if o.is_sweep_override()}
        first = [o.input_line if o.key_or_group not in swept else _first(o) for o in parsed]
        cfg = _compose_full(first, config_name)
    except Exception:
        return  # Hydra reports what does not parse or compose, with its own message
    for key, text in dict(OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}).items():
        if str(key) not in swept:  # a preset's sweep (sweep=seeds, sweep=optuna_*); the command line wins
            with contextlib.suppress(Exception):
                swept[str(key)] = parser.parse_overrides([f"{key}={text}"])[0]
    first_error = _point_error(cfg)
    if not swept:
        if first_error is not None:
            raise first_error
        return
    errors, checked = {}, 0
    groups = {d.name for d in CONFIG_DIR.iterdir() if d.is_dir()}
    for key, override in swept.items():
        for text, value in _values(override):
            checked += 1
            try:
                if key.lstrip("+").split("/")[0] in groups:  # a group choice: compose that point
                    rest = [line for line, o in zip(first, parsed, strict=True) if o.key_or_group != key]
                    point = _compose_full([*rest, f"{override.get_key_element()}={text}"], config_name)
                else:
                    point = copy.deepcopy(cfg)
                    OmegaConf.update(point, key.lstrip("+"), value, force_add=True)
                error = _point_error(point)
            except Exception as exc:  # e.g. a value of the wrong type for its schema
                error = ConfigurationError(f"{key}={text}: {str(exc).splitlines()[0]}")
            if error is not None:
                errors[f"{key}={text}"] = str(error)
    if first_error is not None and len(errors) == checked:
        reasons = " | ".join(dict.fromkeys(errors.values()))
        raise ConfigurationError(f"Every point of this multirun is invalid, so nothing was run: {reasons}")
    if errors:
        warnings.warn(f"{len(errors)} swept value(s) give invalid points, which will fail (each with its failed.json): "
                      + " | ".join(f"{point}: {why}" for point, why in errors.items()), stacklevel=2)


def _first(override: Any) -> str:
    """``key=<its first value>`` of a sweep override."""
    values = _values(override)
    return f"{override.get_key_element()}={values[0][0]}" if values else str(override.input_line)


def _values(override: Any) -> list[tuple[str, Any]]:
    """A sweep's values as (override text, value); an interval's two ends; none for a glob."""
    from hydra.core.override_parser.types import Override

    if override.is_interval_sweep():
        sweep = override.value()
        return [(repr(sweep.start), sweep.start), (repr(sweep.end), sweep.end)]
    if not override.is_sweep_override():
        return [(override.get_value_element_as_str(), override.value())]
    try:
        return list(zip(override.sweep_string_iterator(), override.sweep_iterator(Override._convert_value),
                        strict=True))
    except Exception:
        return []  # a glob over group options: Hydra expands it at launch


def _compose_full(overrides: Sequence[str], config_name: str) -> DictConfig:
    """The composed config of ``overrides`` with its ``hydra`` node (the sweeper's parameters)."""
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _point_error(cfg: DictConfig) -> PromptLearningError | None:
    """The spec's error for one composed point, or None when it is valid (or does not resolve here: the run
    reports that itself)."""
    from prompt_learning.engine.loggers import check_callbacks_config, check_logger_config
    from prompt_learning.run_spec import RunSpec

    try:
        container = {str(k): v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k != "hydra"}
        container = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    except Exception:
        return None
    try:
        spec = RunSpec.from_container(container)  # type: ignore[arg-type]
        check_logger_config(spec.logger)
        check_callbacks_config(spec.callbacks)
    except PromptLearningError as exc:
        return exc
    except Exception:
        return None
    return None
