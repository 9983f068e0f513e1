"""Orchestration: the fixed sequence every run follows, whatever its method or protocol.

    validate -> backbone -> data + task -> method -> prepare -> fit -> calibrate -> evaluate -> record + export

A method takes part in a stage by what it declares (``prepares``, ``trainable`` / ``fits_in_closed_form``,
``calibrates``, ``test_time_adaptive``, its own ``loss``); the protocol builds the task and summarises the
metrics. Nothing here branches on a method's or a protocol's name.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from prompt_learning.engine import stages
from prompt_learning.engine.bookkeeping import (
    add_to_sweep,
    computed_settings,
    finished_results,
    results_record,
    resume_checkpoint,
    run_fingerprint,
)
from prompt_learning.engine.builders import build_data, check_method_scores_task
from prompt_learning.engine.evaluation import evaluate_method
from prompt_learning.engine.loggers import build_callbacks, build_loggers, log_export_artifact
from prompt_learning.engine.module import PromptLearningModule
from prompt_learning.engine.setup import build_backbone, build_trainer, evaluation_trainer, validate_choices
from prompt_learning.engine.tracking import evaluation_metrics, log_test_metrics, start_tracking
from prompt_learning.errors import RunDirectoryInUse, StorageError
from prompt_learning.export import load_method, save_export
from prompt_learning.files import (
    atomic_directory,
    atomic_write_json,
    check_writable_directory,
    remove_leftovers,
)
from prompt_learning.methods import create_method
from prompt_learning.methods.zeroshot import ZeroShotCLIP
from prompt_learning.progress import set_progress
from prompt_learning.protocols import get_protocol
from prompt_learning.run_lock import RunLock, is_secondary_rank
from prompt_learning.run_spec import RunSpec
from prompt_learning.user_errors import Place, storage_error

log = logging.getLogger(__name__)


def run_tags(spec: RunSpec) -> list[str]:
    """Tags of the run for loggers that take them (W&B): method, dataset, protocol, backbone, shots."""
    return [spec.method.name, spec.dataset_name, spec.protocol.name, spec.backbone.name, f"shots_{spec.shots}"]


def train_and_test(spec: RunSpec, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run every stage of one configuration, write results.json and the export; return the record."""
    started, start = datetime.now(UTC), time.time()
    run_dir = Path(spec.paths.run_dir)
    validate_choices(spec)
    set_progress(spec.trainer.enable_progress_bar)  # long waits outside Lightning's loops follow its bar
    protocol = get_protocol(spec.protocol.name)
    L.seed_everything(spec.seed, workers=True, verbose=False)
    backbone = build_backbone(spec)
    task, dm = build_data(spec, backbone, run_dir)
    method = create_method(spec.method, backbone, task.train_classes)
    check_method_scores_task(method, task, protocol.name)
    names_seen = stages.offer_class_names(method, task)  # uses_unseen_names_in_training: every evaluated name
    dm.train_transform = method.augmentation(dm.train_transform, task.train_classes)  # the method's own, if any
    settings = computed_settings(spec.container)
    fingerprint = run_fingerprint(settings)
    module = PromptLearningModule(backbone, method, task.train_classes, [(e.name, e.classes) for e in task.evals],
                                  dataclasses.asdict(spec.optim),
                                  {"fingerprint": fingerprint, "settings": settings})
    loggers = build_loggers(spec.logger, run_dir, run_tags(spec), _relative(run_dir, spec.paths.output_dir))
    trainer = build_trainer(spec, run_dir, [*build_callbacks(spec.callbacks), *callbacks], loggers,
                            inference_mode=not method.test_time_adaptive)
    start_tracking(trainer, spec.container, len(task.train), spec.data.batch_size)  # log interval + config
    device = trainer.strategy.root_device
    record_extras: dict[str, Any] = {}

    fit_start = time.time()
    prepared = stages.run_prepare(method, dm, device, spec.shots)  # 1. prepare
    views, val_acc = 0, None
    if method.fits_in_closed_form:  # 2. fit: the method's own
        record_extras["fit"] = stages.run_closed_form_fit(method, dm, device)
        val_acc = record_extras["fit"].get("val_acc")
    elif method.trainable:  # 2. fit: SGD through Lightning
        views = stages.train_views_for(spec.data.feature_cache.train_views, method, trainer.world_size)
        if views:
            stages.prepare_train_views(method, dm, views, device)
        trainer.fit(module, datamodule=dm, ckpt_path=resume_checkpoint(spec.resume, run_dir, settings))
        val = trainer.callback_metrics.get("val/acc")
        val_acc = None if val is None else float(val)
    calibrated = stages.run_calibrate(method, dm, device)  # 3. calibrate
    fit_time = time.time() - fit_start

    results = evaluate_method(trainer, method, task, dm, protocol)  # 4. evaluate
    zero_shot = None
    adapts = method.trainable or method.prepares or method.calibrates or method.test_time_adaptive
    if spec.protocol.eval_zero_shot and adapts:  # the reference of every method that learns from data
        baseline = create_method({"name": ZeroShotCLIP.name}, backbone, task.train_classes)
        zero_shot = evaluate_method(trainer, baseline, task, dm, protocol)
    record = results_record(spec, protocol, method, task, results, zero_shot, fingerprint, record_extras.get("fit"))
    record.update(names_seen)  # saw_unseen_class_names: the tables mark such runs (results/runs.py)
    if not trainer.is_global_zero:  # DDP: every rank computed the same synced metrics; rank 0 writes
        return record
    log_test_metrics(trainer.loggers, evaluation_metrics(results, zero_shot, val_acc), trainer.global_step)
    sgd = method.trainable and not method.fits_in_closed_form
    training = {"epochs": trainer.current_epoch if sgd else 0, "n_train": len(task.train), "shots": spec.shots,
                "seed": spec.seed, "dataset": spec.dataset_name, **({"train_views": views} if views else {}),
                **({"training_data": task.training_data} if not task.training_data.get("labels", True) else {})}
    with atomic_directory(run_dir / "export") as export:  # whole or not at all: a failed write keeps the old one
        save_export(export, method, training, record=record)  # zero-shot too; record: the card's metrics
    log_export_artifact(trainer.loggers, run_dir / "export", f"prompts-{spec.method.name}-{spec.dataset_name}-"
                        f"{spec.backbone.name}", {"shots": spec.shots, "seed": spec.seed, "protocol": protocol.name})
    record.update(record_extras)
    for stage, summary in (("prepare", prepared), ("calibrate", calibrated)):
        if summary is not None:
            record[stage] = summary
    if sgd:
        record["epochs_trained"] = trainer.current_epoch  # below max_epochs when a callback stopped training early
    record["val_acc"] = val_acc  # last epoch's validation accuracy: what sweeps optimise (never test accuracy)
    record["world_size"] = trainer.world_size
    record["train_views"] = views  # K: trained on cached features of K augmented views per image (0: on images)
    record["train_time_s"] = round(fit_time, 2)  # training alone (view encoding included), without testing
    record.update(started_at=started.isoformat(), wall_time_s=round(time.time() - start, 2))
    atomic_write_json(run_dir / "results.json", record)
    return record


def _relative(run_dir: Path, output_dir: str) -> str:
    """The run's name for loggers: its directory relative to the output root."""
    return os.path.relpath(run_dir, output_dir)


def output_places(container: dict[str, Any]) -> list[Place]:
    """Where a run writes and the setting that moves each place: the fix a storage error names."""
    paths, places = container.get("paths") or {}, []
    if paths.get("output_dir"):
        places.append(Place(Path(str(paths["output_dir"])).expanduser(), "paths.output_dir", "PL_OUTPUT_DIR"))
    if paths.get("run_dir"):
        places.append(Place(Path(str(paths["run_dir"])).expanduser(), "paths.run_dir"))
    cache = (container.get("data") or {}).get("cache_dir")
    if cache:  # the decoded images, and beside them the feature caches
        places.append(Place(Path(str(cache)).expanduser().parent, "data.cache_dir", "PL_CACHE_DIR"))
    return places


def run_point(container: dict[str, Any], callbacks: Sequence[Callback] = (),
              make_spec: Callable[[dict[str, Any]], RunSpec] = RunSpec.from_container) -> dict[str, Any]:
    """One run or one point of a sweep, made safe to repeat and to launch twice.

    * the run directory is locked for the whole run (``<run_dir>/.lock``, :mod:`prompt_learning.run_lock`):
      a second run on it is refused (``status: failed``, RunDirectoryInUse naming the holder) and writes
      nothing there; what a killed write left there (``*.pl-tmp``) is removed first;
    * ``skip_done`` (default true): a run directory whose results.json carries this config's fingerprint
      is not run again (``status: skipped``);
    * an exception is written to ``<run_dir>/failed.json`` (type, message, traceback) and returned as
      ``status: failed`` instead of stopping the sweep; a later success removes failed.json;
    * a run directory that cannot be written, or a disk that fills up, is a StorageError naming the path and
      the setting that moves it (then failed.json cannot be written either: the returned status says it all);
    * a point killed mid-training resumes from its ``last.ckpt`` when launched again (``resume``).

    ``container`` is the resolved config; ``make_spec`` converts it inside the guard, so that a config the
    spec refuses is a failed point like any other error.
    """
    run_dir = Path(container["paths"]["run_dir"])
    places = output_places(container)
    lock = RunLock(run_dir, "train")
    try:
        if not is_secondary_rank():  # DDP: rank 0 holds the directory for every rank
            lock.acquire()
    except RunDirectoryInUse as exc:  # refused before any work: the directory keeps the other run's files as they are
        return refused(run_dir, exc)
    except OSError as exc:  # the directory cannot be written: nothing can be recorded in it either
        return refused(run_dir, storage_error(exc, places))
    try:
        removed = remove_leftovers(run_dir) if lock.held else []  # other ranks: rank 0's files, maybe mid-write
        if removed:
            log.info("Removed %d temporary file(s) of an interrupted write in %s", len(removed), run_dir)
        done = run_dir / "results.json"
        if container.get("skip_done", True) and done.is_file() and (record := finished_record(done)) is not None:
            if record.get("fingerprint") == run_fingerprint(computed_settings(container)):
                log.warning("Skipping %s: its results.json was written by the same settings (skip_done=false "
                            "reruns).", run_dir)
                record = add_to_sweep(done, record, container.get("sweep_id"))
                return {"status": "skipped", "run_dir": str(run_dir), "record": record}
        check_writable_directory(run_dir)  # a disk already full fails here, before any work
        record = train_and_test(make_spec(container), callbacks)
        (run_dir / "failed.json").unlink(missing_ok=True)
    except RunDirectoryInUse as exc:  # refused before any work: the directory keeps the other run's files as they are
        return refused(run_dir, exc)
    except Exception as exc:
        return record_failure(run_dir, storage_error(exc, places))
    finally:
        lock.release()
    return {"status": "done", "run_dir": str(run_dir), "record": record}


def finished_record(done: Path) -> dict[str, Any] | None:
    """The record in a results.json, or None after a warning when it cannot be read (cut short by a copy, or
    by a kill under a version that wrote it in place): the point runs again and a whole one replaces it."""
    try:
        record: Any = json.loads(done.read_text())
    except json.JSONDecodeError as exc:
        record, reason = None, f"not valid JSON at line {exc.lineno}, column {exc.colno}"
    except (OSError, ValueError) as exc:
        record, reason = None, getattr(exc, "strerror", None) or str(exc)
    else:
        reason = "not a JSON object"
    if isinstance(record, dict):
        return record
    log.warning("Running %s again: its results.json cannot be read (%s); the new run's replaces it.", done.parent,
                reason)
    return None


def refused(run_dir: Path, exc: BaseException) -> dict[str, Any]:
    """The ``status: failed`` of a point that did not run and wrote nothing (no failed.json)."""
    return {"status": "failed", "run_dir": str(run_dir), "error": f"{type(exc).__name__}: {exc}", "exception": exc}


def record_failure(run_dir: Path, exc: BaseException) -> dict[str, Any]:
    """``<run_dir>/failed.json`` (type, message, traceback) and the ``status: failed`` of a point. A failed.json
    that cannot be written (the disk that stopped the run is full) leaves the status alone to say it."""
    failure = {"status": "failed", "run_dir": str(run_dir), "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(), "failed_at": datetime.now(UTC).isoformat()}
    try:
        atomic_write_json(run_dir / "failed.json", failure)
    except OSError as write_error:
        report = log.debug if isinstance(exc, StorageError) else log.warning  # the error line says it already
        report("Could not record the failure in %s: %s", run_dir / "failed.json", write_error)
    return {**failure, "exception": exc}


def retest(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Re-test a finished run from its export (``scripts/eval.py``); writes ``<run_dir>/eval.json``. The run
    directory is locked meanwhile: a run still training there is not re-tested."""
    finished_results(run_dir)
    caches = [p for p in output_places(spec.container) if p.setting == "data.cache_dir"]
    places = [Place(Path(run_dir), "run_dir", hint="copy the run directory to a writable disk and set "
                    "run_dir=<the copy>"), *caches]
    try:
        with RunLock(run_dir, "eval", elsewhere=None):
            return _retest(spec, Path(run_dir))
    except OSError as exc:
        error = storage_error(exc, places)
        if error is exc:
            raise
        raise error from None


def _retest(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    set_progress(spec.trainer.enable_progress_bar)
    protocol = get_protocol(spec.protocol.name)
    L.seed_everything(spec.seed, workers=True, verbose=False)  # same random init for pretrained=null backbones
    backbone = build_backbone(spec)
    task, dm = build_data(spec, backbone)
    export = run_dir / "export"
    method = load_method(export, backbone) if export.is_dir() else create_method(spec.method, backbone,
                                                                                 task.train_classes)
    trainer = evaluation_trainer(spec, run_dir, inference_mode=not method.test_time_adaptive)
    record = {"method": method.name, "dataset": spec.dataset_name, "protocol": protocol.name,
              **evaluate_method(trainer, method, task, dm, protocol), "evaluated_at": datetime.now(UTC).isoformat()}
    atomic_write_json(run_dir / "eval.json", record)
    return record
