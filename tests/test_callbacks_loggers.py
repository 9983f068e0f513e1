"""Callbacks and loggers from the ``callbacks`` / ``logger`` config groups (prompt_learning/engine/loggers.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from prompt_learning.config import CONFIG_DIR, compose_config
from prompt_learning.engine.loggers import (
    build_callbacks,
    build_loggers,
    check_callbacks_config,
    check_logger_config,
    log_export_artifact,
    training_callbacks,
)
from prompt_learning.errors import ConfigurationError

PACKAGE = Path(__file__).parents[1] / "prompt_learning"


def sections(tmp_path: Path, *overrides: str) -> tuple[dict, dict | None, Path]:
    """The resolved ``logger`` and ``callbacks`` sections as plain dicts (as the engine passes them), and run_dir."""
    cfg = compose_config([f"paths.output_dir={tmp_path}", *overrides])
    return (OmegaConf.to_container(cfg.logger, resolve=True), OmegaConf.to_container(cfg.callbacks, resolve=True),
            Path(cfg.paths.run_dir))


def events(run_dir: Path) -> list[Path]:
    return list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def hide_packages(monkeypatch, *names: str) -> None:
    """Make ``importlib.util.find_spec`` say these packages are not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


class Tiny(L.LightningModule):
    """A one-layer module whose validation accuracy never improves."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def _loader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)

    train_dataloader = val_dataloader = _loader

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/acc", 50.0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_default_is_csv_and_no_callbacks(tmp_path) -> None:
    logger_cfg, callbacks_cfg, run_dir = sections(tmp_path)
    assert build_callbacks(callbacks_cfg) == []
    [csv] = build_loggers(logger_cfg, run_dir, tags=[], run_name="r")
    assert isinstance(csv, CSVLogger) and Path(csv.log_dir) == run_dir / "logs" / "version_0"
    assert build_loggers(sections(tmp_path, "logger=none")[0], run_dir, [], "r") == []


def test_early_stopping_from_config(tmp_path) -> None:
    _, callbacks_cfg, _ = sections(tmp_path, "callbacks=early_stopping", "logger=tensorboard")
    yaml = OmegaConf.load(CONFIG_DIR / "callbacks" / "early_stopping.yaml").early_stopping
    [stop] = build_callbacks(callbacks_cfg)
    assert isinstance(stop, EarlyStopping)
    assert (stop.monitor, stop.mode, stop.patience) == ("val/acc", "max", yaml.patience) == (yaml.monitor, yaml.mode,
                                                                                              yaml.patience)


def test_several_callbacks_and_disabled_entries(tmp_path) -> None:
    _, both, _ = sections(tmp_path, "callbacks=[early_stopping,lr_monitor]", "callbacks.early_stopping.patience=7")
    stop, monitor = build_callbacks(both)
    assert isinstance(stop, EarlyStopping) and stop.patience == 7 and isinstance(monitor, LearningRateMonitor)
    assert list(training_callbacks(both)) == ["early_stopping"]  # the LR monitor only watches
    _, one, _ = sections(tmp_path, "callbacks=[early_stopping,lr_monitor]", "callbacks.early_stopping=null")
    assert [type(c) for c in build_callbacks(one)] == [LearningRateMonitor]
    assert build_callbacks(None) == []


def test_tensorboard_logger_writes_event_files(tmp_path) -> None:
    logger_cfg, _, run_dir = sections(tmp_path, "logger=tensorboard")
    [tb] = build_loggers(logger_cfg, run_dir, tags=["coop"], run_name="r")
    assert isinstance(tb, TensorBoardLogger)
    tb.log_metrics({"val/acc": 50.0}, step=0)
    tb.finalize("success")
    assert events(run_dir)


def test_built_in_and_target_loggers_combine_in_any_order(tmp_path) -> None:
    for choice in ("[csv,tensorboard]", "[tensorboard,csv]"):
        logger_cfg, _, run_dir = sections(tmp_path, f"logger={choice}")
        assert [type(x) for x in build_loggers(logger_cfg, run_dir, [], "r")] == [CSVLogger, TensorBoardLogger]
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    logger_cfg, _, run_dir = sections(tmp_path, "logger=[tensorboard,wandb_offline]")
    wandb, tb = build_loggers(logger_cfg, run_dir, tags=["coop", "shots_2"], run_name="base2new/x")
    assert isinstance(wandb, WandbLogger) and isinstance(tb, TensorBoardLogger)
    init = wandb._wandb_init
    assert wandb._offline and Path(init["dir"]) == run_dir
    assert (init["tags"], init["name"], init["group"]) == (["coop", "shots_2"], "base2new/x", "base2new/synthetic/coop")


def test_trainer_stops_early_and_logs_to_every_logger(tmp_path) -> None:
    logger_cfg, callbacks_cfg, run_dir = sections(tmp_path, "logger=[csv,tensorboard]",
                                                  "callbacks=[early_stopping,lr_monitor]",
                                                  "callbacks.early_stopping.patience=1")
    callbacks = build_callbacks(callbacks_cfg)
    trainer = L.Trainer(accelerator="cpu", max_epochs=5, logger=build_loggers(logger_cfg, run_dir, [], "r"),
                        callbacks=callbacks, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, log_every_n_steps=1, default_root_dir=run_dir)
    trainer.fit(Tiny())
    assert 0 < callbacks[0].stopped_epoch < 4 and trainer.current_epoch < 5  # val/acc never improves
    assert events(run_dir)
    header = (run_dir / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "val/acc" in header and "lr-SGD" in header


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONFIG_DIR / "logger").glob("*.yaml")))
def test_every_logger_option_checks(tmp_path, option: str) -> None:
    """Each option passes the check, or fails in one message naming the package to install."""
    logger_cfg, _, _ = sections(tmp_path, f"logger={option}")
    needs = {"mlflow": "mlflow", "wandb": "wandb", "wandb_offline": "wandb"}.get(option)
    if needs and importlib.util.find_spec(needs) is None:
        with pytest.raises(ConfigurationError, match=f"needs the {needs} package"):
            check_logger_config(logger_cfg)
    else:
        check_logger_config(logger_cfg)


def test_missing_optional_package_is_one_clear_error(tmp_path, monkeypatch) -> None:
    logger_cfg, _, run_dir = sections(tmp_path, "logger=[csv,tensorboard]")
    mlflow, wandb = sections(tmp_path, "logger=mlflow")[0], sections(tmp_path, "logger=wandb_offline")[0]
    hide_packages(monkeypatch, "tensorboard", "tensorboardX", "wandb", "mlflow")
    message = "logger=tensorboard needs the tensorboard package: `uv sync --extra tensorboard`."
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        check_logger_config(logger_cfg)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        build_loggers(logger_cfg, run_dir, [], "r")
    assert not (run_dir / "logs").exists()  # checked before any logger was built
    with pytest.raises(ConfigurationError, match=re.escape("logger=mlflow needs the mlflow package: `uv pip install")):
        check_logger_config(mlflow)
    with pytest.raises(ConfigurationError,
                       match=re.escape("logger=wandb needs the wandb package: `uv sync --extra wandb`.")):
        check_logger_config(wandb)


class NeedsAbsentPackage(CSVLogger):
    """A logger whose constructor imports a package that is not installed."""

    def __init__(self) -> None:
        import not_an_installed_package  # noqa: F401


def test_a_failing_import_in_a_logger_names_the_package(tmp_path) -> None:
    cfg = {"name": "none", "targets": {"mine": {"_target_": f"{__name__}.NeedsAbsentPackage"}}}
    with pytest.raises(ConfigurationError, match="logger=mine needs the not_an_installed_package package"):
        build_loggers(cfg, tmp_path, [], "r")


@pytest.mark.parametrize("cfg,message", [
    ({"name": "tensorbord"}, r"logger.name='tensorbord' is not a valid choice; use one of \['csv', 'wandb', 'none'\]"),
    ({"name": "wandb", "mode": "ofline"}, r"logger.mode='ofline' is not a valid choice"),
    ({"targets": {"tb": {"save_dir": "x"}}}, r"logger.targets.tb needs a `_target_: <module.Class>` entry"),
    ({"targets": {"tb": {"_target_": "lightning.pytorch.loggers.TensorBordLogger"}}},
     r"logger.targets.tb._target_='lightning.pytorch.loggers.TensorBordLogger' cannot be imported"),
    ({"targets": {"es": {"_target_": "lightning.pytorch.callbacks.EarlyStopping"}}},
     r"logger.targets.es._target_=.* is not a Lightning Logger subclass"),
])
def test_bad_logger_configs_are_named(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        check_logger_config(cfg)


def test_bad_callbacks_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"callbacks.stop._target_=.* is not a Lightning Callback subclass"):
        check_callbacks_config({"stop": {"_target_": "lightning.pytorch.loggers.CSVLogger"}})
    with pytest.raises(ConfigurationError, match=r"callbacks.early_stopping could not be built"):
        build_callbacks({"early_stopping": {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "patiense": 2}})
    with pytest.raises(ConfigurationError, match=r"callbacks.stop needs a `_target_"):
        build_callbacks({"stop": "early_stopping"})


def test_export_artifact_ignores_other_loggers(tmp_path) -> None:
    log_export_artifact([CSVLogger(tmp_path)], tmp_path, "prompts-coop-synthetic-tiny", {"seed": 1})


def _engine_uses_this_module() -> bool:
    return any("build_callbacks(" in p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "loggers.py")


@pytest.mark.skipif(not _engine_uses_this_module(), reason="the engine does not build callbacks from the config yet")
def test_train_and_test_uses_configured_callbacks_and_loggers(run_cfg) -> None:
    from prompt_learning.engine.run import train_and_test

    class Capture(Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            self.callbacks, self.loggers = list(trainer.callbacks), list(trainer.loggers)

    capture = Capture()
    cfg = run_cfg("callbacks=[early_stopping,lr_monitor]", "logger=[csv,tensorboard]", "trainer.max_epochs=1")
    train_and_test(cfg, [capture])
    assert any(isinstance(c, EarlyStopping) for c in capture.callbacks)
    assert {type(x) for x in capture.loggers} == {CSVLogger, TensorBoardLogger}
    assert events(Path(cfg.paths.run_dir))
