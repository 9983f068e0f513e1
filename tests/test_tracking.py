"""What the loggers get (prompt_learning/engine/tracking.py): the resolved config, every test metric, and the
training loss of every epoch, however few batches an epoch has.

One few-shot run (2 shots, tiny backbone, 2 epochs) logs to W&B offline and to a CSV logger at once; the
tests read back its W&B log (the ``.wandb`` file, a LevelDB-style record log of wandb's protobuf
``Record`` messages) and its ``metrics.csv`` / ``hparams.yaml``.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from prompt_learning.config import compose_config
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.tracking import (
    epoch_logging_interval,
    evaluation_metrics,
    train_batches_per_epoch,
)

ROOT = Path(__file__).parents[1]
INTERVAL_WARNING = "is smaller than the logging interval"


def read_wandb_log(path: Path) -> list[Any]:
    """The protobuf records of an offline W&B run's ``.wandb`` file: a 7-byte ``:W&B`` header, then records
    framed as in LevelDB's log format (32 KiB blocks; a 7-byte header of checksum, length and type, where a
    record split over blocks comes as FIRST (2), MIDDLE (3) and LAST (4) pieces and a whole one as FULL (1))."""
    from wandb.proto import wandb_internal_pb2

    block, data = 32768, path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        piece, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
    return records


def wandb_values(records: list[Any], kind: str) -> dict[str, Any]:
    """The latest value of every key of the run's ``config`` or ``summary`` updates."""
    values = {}
    for record in records:
        if record.WhichOneof("record_type") == kind:
            for item in getattr(record, kind).update:
                values[".".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return values


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """A 2-shot base-to-new run (1 training batch per epoch) logging to W&B offline and a CSVLogger; what
    wandb.init was given and the warnings the run raised are kept."""
    wandb = pytest.importorskip("wandb")
    from prompt_learning.engine.run import train_and_test

    out = tmp_path_factory.mktemp("tracking")
    cfg = compose_config(["backbone=tiny_test", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
                          "shots=2", "logger=wandb_offline", "dataset.test_per_class=2", "dataset.val_per_class=1",
                          "++logger.targets={csv: {_target_: lightning.pytorch.loggers.CSVLogger, "
                          "save_dir: '${paths.run_dir}', name: logs}}", f"paths.output_dir={out}"])
    inits: list[dict[str, Any]] = []
    real_init = wandb.init

    def spy(*args: Any, **kwargs: Any) -> Any:
        inits.append(kwargs)
        return real_init(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.setattr(wandb, "init", spy)
        record = train_and_test(cfg)
    run_dir = Path(cfg.paths.run_dir)
    rows = list(csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()))
    hparams = yaml.safe_load((run_dir / "logs" / "version_0" / "hparams.yaml").read_text())
    wandb_log = read_wandb_log(next((run_dir / "wandb").glob("offline-run-*/run-*.wandb")))
    return SimpleNamespace(record=record, rows=rows, hparams=hparams, wandb_log=wandb_log, inits=inits,
                           warnings=[str(w.message) for w in caught])


# -- point 7: the training loss of every epoch ---------------------------------------------------------------------


def test_logging_interval_is_capped_at_one_epoch() -> None:
    assert epoch_logging_interval(10, 2) == 2  # a few-shot epoch: its last batch logs
    assert epoch_logging_interval(10, 50) == 10
    assert epoch_logging_interval(10, 0) == 1
    assert epoch_logging_interval(0, 3) == 0  # Lightning's "never log" is kept


@pytest.mark.parametrize(("n", "batch_size", "world"), [(8, 32, 1), (64, 32, 1), (70, 32, 1), (31, 4, 1),
                                                        (70, 32, 2), (9, 32, 2), (33, 8, 4)])
def test_batches_per_epoch_match_the_train_loader(n: int, batch_size: int, world: int) -> None:
    dm = PromptDataModule(SimpleNamespace(train=list(range(n))), load_image=None, train_transform=None,
                          eval_transform=None, batch_size=batch_size)
    dm.trainer = SimpleNamespace(global_rank=world - 1, world_size=world)  # what a DDP rank sees
    assert train_batches_per_epoch(n, batch_size, world) == len(dm.train_dataloader())


def test_few_shot_run_logs_the_training_loss_every_epoch(run) -> None:
    epochs = {row["epoch"] for row in run.rows if row["epoch"]}
    assert epochs == {"0", "1"}
    for column in ("train/loss", "train/loss_epoch"):
        logged = {row["epoch"] for row in run.rows if row.get(column)}
        assert logged == epochs, f"{column} logged in epochs {sorted(logged)}"


def test_few_shot_run_raises_no_logging_interval_warning(run) -> None:
    assert not [w for w in run.warnings if INTERVAL_WARNING in w]


# -- point 6: the config and the test metrics reach every logger -----------------------------------------------------


def test_evaluation_metrics_flatten_any_protocol_summary() -> None:
    transfer = {"metrics": {"imagenet": {"acc": 70.0}, "caltech101": {"acc": 90.0}}, "target_mean": 90.0}
    zero_shot = {"metrics": {"imagenet": {"acc": 60}}, "target_mean": 80.5, "flag": True, "note": "x"}
    assert evaluation_metrics(transfer, zero_shot, val_acc=75.0) == {
        "test/imagenet_acc": 70.0, "test/caltech101_acc": 90.0, "test/target_mean": 90.0,
        "zero_shot/imagenet_acc": 60.0, "zero_shot/target_mean": 80.5, "val/acc": 75.0}
    assert evaluation_metrics({"metrics": {"all": {"acc": 50.0}}}) == {"test/all_acc": 50.0}


def test_csv_log_holds_the_config_and_the_test_metrics(run) -> None:
    record = run.record
    assert run.hparams["method"] == record["config"]["method"]
    assert run.hparams["optim"] == record["config"]["optim"] and run.hparams["shots"] == 2
    final = {k: float(v) for k, v in run.rows[-1].items() if v and k.startswith(("test/", "zero_shot/", "val/"))}
    assert final["test/base_acc"] == record["metrics"]["base"]["acc"]
    assert final["test/new_acc"] == record["metrics"]["new"]["acc"]
    assert final["test/hm"] == record["hm"] and final["val/acc"] == record["val_acc"]
    assert final["zero_shot/hm"] == record["zero_shot"]["hm"]


def test_wandb_offline_log_holds_the_config_and_the_test_metrics(run) -> None:
    record = run.record
    config = wandb_values(run.wandb_log, "config")
    assert config["method"] == record["config"]["method"] and config["optim"] == record["config"]["optim"]
    assert config["dataset"]["name"] == record["dataset"] and config["seed"] == record["seed"]
    summary = wandb_values(run.wandb_log, "summary")
    assert summary["test/base_acc"] == record["metrics"]["base"]["acc"]
    assert summary["test/new_acc"] == record["metrics"]["new"]["acc"]
    assert summary["test/hm"] == record["hm"] and summary["val/acc"] == record["val_acc"]
    assert summary["zero_shot/base_acc"] == record["zero_shot"]["metrics"]["base"]["acc"]


def test_wandb_sweep_metrics_are_in_the_run_summary(run) -> None:
    """A W&B sweep reads the metric it optimises from each run's summary."""
    summary = wandb_values(run.wandb_log, "summary")
    for spec_file in (ROOT / "scripts" / "sweeps").glob("wandb_*.yaml"):
        name = yaml.safe_load(spec_file.read_text())["metric"]["name"]
        assert name in summary, f"{spec_file.name} optimises {name}, which the run summary lacks"


def test_wandb_gets_no_anonymous_setting(run) -> None:
    """Lightning passed anonymous=None, and wandb warned that "the anonymous setting has no effect"."""
    assert run.inits and all("anonymous" not in kwargs for kwargs in run.inits)
