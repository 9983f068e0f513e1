"""Lightning loggers and callbacks from the ``logger`` and ``callbacks`` config groups.

``logger``: one built-in logger by ``name`` (csv | wandb | none; csv.yaml, wandb.yaml, wandb_offline.yaml,
none.yaml), plus any Lightning logger as a named ``_target_`` entry of ``targets`` (tensorboard.yaml,
mlflow.yaml), instantiated with ``hydra.utils.instantiate``. A targets-only option sets no ``name`` (none),
so ``logger=tensorboard`` logs to TensorBoard alone and ``logger=[csv,tensorboard]`` to both.

``callbacks``: a mapping of named ``_target_`` entries (``callbacks=[early_stopping,lr_monitor]``), as in
lightning-hydra-template's ``instantiate_callbacks``; an entry set to null is skipped.

Loggers and monitoring callbacks change how a run is watched, so they stay out of the run fingerprint; the
callbacks that can change what a run computes (early stopping: ``training_callbacks``) are part of it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from prompt_learning.errors import ConfigurationError

BUILTIN_LOGGERS = ("csv", "wandb", "none")
WANDB_MODES = ("online", "offline")
# Lightning loggers whose package is optional: class name -> (modules, any of which will do; package; install)
OPTIONAL_PACKAGES = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "tensorboard", "uv sync --extra tensorboard"),
    "MLFlowLogger": (("mlflow",), "mlflow", "uv pip install mlflow"),
    "WandbLogger": (("wandb",), "wandb", "uv sync --extra wandb"),
    "CometLogger": (("comet_ml",), "comet_ml", "uv pip install comet_ml"),
    "NeptuneLogger": (("neptune",), "neptune", "uv pip install neptune"),
}
# Callbacks that only watch a run: everything else (EarlyStopping, Timer, ...) may change what it computes.
OBSERVER_CALLBACKS = {"LearningRateMonitor", "DeviceStatsMonitor", "ModelSummary", "RichModelSummary",
                      "TQDMProgressBar", "RichProgressBar"}


def _entries(section: str, entries: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The enabled ``name -> {_target_: ..., kwargs}`` entries of a section (null / false entries are off)."""
    if entries is None:
        return {}
    if not isinstance(entries, Mapping):
        raise ConfigurationError(f"{section} must be a mapping of name -> {{_target_: ..., kwargs}}, "
                                 f"not {entries!r}.")
    enabled = {}
    for key, entry in entries.items():
        if entry is None or entry is False:
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("_target_"), str):
            raise ConfigurationError(f"{section}.{key} needs a `_target_: <module.Class>` entry (or null to turn "
                                     f"it off); got {entry!r}.")
        enabled[str(key)] = entry
    return enabled


def _label(section: str, key: str) -> str:
    """How an entry is named in messages: ``logger=tensorboard`` (as chosen), ``callbacks.early_stopping``."""
    return f"logger={key}" if section == "logger.targets" else f"{section}.{key}"


def _check_target(section: str, key: str, entry: Mapping[str, Any], base: type) -> type:
    """Import the entry's class; it must subclass ``base``, and a Lightning logger's optional package must
    be installed."""
    try:
        cls = get_class(entry["_target_"])
    except Exception as exc:
        raise ConfigurationError(f"{section}.{key}._target_={entry['_target_']!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigurationError(f"{section}.{key}._target_={entry['_target_']!r} is not a Lightning "
                                 f"{base.__name__} subclass.")
    modules, package, install = OPTIONAL_PACKAGES.get(cls.__name__, ((), "", ""))
    if modules and all(importlib.util.find_spec(m) is None for m in modules):
        raise ConfigurationError(f"{_label(section, key)} needs the {package} package: `{install}`.")
    return cls


def _instantiate(section: str, key: str, entry: Mapping[str, Any], base: type) -> Any:
    """``hydra.utils.instantiate`` with plain-Python arguments; a failure names the entry."""
    cls = _check_target(section, key, entry, base)
    try:
        obj = instantiate({"_convert_": "all", **entry})
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ModuleNotFoundError):  # e.g. mlflow-skinny where Lightning wants mlflow
            _, package, install = OPTIONAL_PACKAGES.get(cls.__name__, ((), cause.name or str(cause), ""))
            hint = f": `{install}`" if install else f" ({cause})"
            raise ConfigurationError(f"{_label(section, key)} needs the {package} package{hint}.") from exc
        raise ConfigurationError(f"{section}.{key} could not be built: {exc}") from exc
    return obj


def check_logger_config(logger_cfg: Mapping[str, Any]) -> None:
    """Validate the ``logger`` section before any work: the built-in ``name`` (and the W&B mode), every
    ``targets`` entry's class, and the optional packages they need (one ConfigurationError naming the
    extra to install)."""
    name = logger_cfg.get("name", "none")
    if name not in BUILTIN_LOGGERS:
        raise ConfigurationError(f"logger.name={name!r} is not a valid choice; use one of {list(BUILTIN_LOGGERS)}.")
    if name == "wandb":
        mode = logger_cfg.get("mode", "online")
        if mode not in WANDB_MODES:
            raise ConfigurationError(f"logger.mode={mode!r} is not a valid choice; use one of {list(WANDB_MODES)}.")
        if importlib.util.find_spec("wandb") is None:
            raise ConfigurationError("logger=wandb needs the wandb package: `uv sync --extra wandb`.")
    for key, entry in _entries("logger.targets", logger_cfg.get("targets")).items():
        _check_target("logger.targets", key, entry, Logger)


def build_loggers(logger_cfg: Mapping[str, Any], run_dir: Path, tags: Sequence[str], run_name: str) -> list[Logger]:
    """The run's loggers: the built-in one by ``logger.name`` (csv: ``<run_dir>/logs/version_N``, a new version
    per attempt; wandb: under ``<run_dir>/wandb``, with ``tags`` and ``run_name``), then each ``targets`` entry.

    ``logger_cfg`` is the resolved section as a plain dict (``OmegaConf.to_container(cfg.logger, resolve=True)``).
    """
    check_logger_config(logger_cfg)
    run_dir = Path(run_dir)
    name = logger_cfg.get("name", "none")
    loggers: list[Logger] = []
    if name == "csv":
        loggers.append(CSVLogger(save_dir=run_dir, name="logs"))  # logs/version_N: a resumed attempt never overwrites
    elif name == "wandb":
        loggers.append(WandbLogger(project=logger_cfg.get("project", "prompt_learning"), save_dir=str(run_dir),
                                   offline=logger_cfg.get("mode") == "offline", group=logger_cfg.get("group"),
                                   tags=list(tags), name=run_name))
    for key, entry in _entries("logger.targets", logger_cfg.get("targets")).items():
        loggers.append(_instantiate("logger.targets", key, entry, Logger))
    for logger in loggers:
        _drop_unset_anonymous(logger)
    return loggers


def _drop_unset_anonymous(logger: Logger) -> None:
    """Lightning's WandbLogger hands ``anonymous`` to ``wandb.init`` even when nobody set it (as None), and
    wandb then warns that the setting has no effect; leave the argument out unless it was asked for."""
    init = getattr(logger, "_wandb_init", None) if isinstance(logger, WandbLogger) else None
    if isinstance(init, dict) and init.get("anonymous", "") is None:
        del init["anonymous"]


def check_callbacks_config(callbacks_cfg: Mapping[str, Any] | None) -> None:
    """Validate the ``callbacks`` section before any work: every enabled entry names a Callback class."""
    for key, entry in _entries("callbacks", callbacks_cfg).items():
        _check_target("callbacks", key, entry, Callback)


def build_callbacks(callbacks_cfg: Mapping[str, Any] | None) -> list[Callback]:
    """Instantiate every enabled ``_target_`` entry of the ``callbacks`` section, in config order."""
    return [_instantiate("callbacks", key, entry, Callback)
            for key, entry in _entries("callbacks", callbacks_cfg).items()]


def training_callbacks(callbacks_cfg: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """The enabled entries that may change what a run computes (all but ``OBSERVER_CALLBACKS``, e.g.
    EarlyStopping): what a run fingerprint would need to include to tell such runs apart."""
    return {key: entry for key, entry in _entries("callbacks", callbacks_cfg).items()
            if entry["_target_"].rsplit(".", 1)[-1] not in OBSERVER_CALLBACKS}


def log_export_artifact(loggers: Sequence[Logger], export_dir: Path, artifact_name: str,
                        metadata: dict[str, Any]) -> None:
    """With a W&B logger, the export becomes a versioned artifact ``artifact_name`` (type ``prompts``) and
    the W&B run is finished; other loggers are left alone."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(artifact_name, type="prompts", metadata=metadata)
            artifact.add_dir(str(export_dir))
            logger.experiment.log_artifact(artifact)
            logger.experiment.finish()  # flush now; the next run of a multirun starts its own W&B run
