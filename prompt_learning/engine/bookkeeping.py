"""Bookkeeping: the run fingerprint, resuming from a checkpoint of the same settings, and the results record."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from prompt_learning.engine.loggers import training_callbacks
from prompt_learning.errors import ConfigurationError, FormatError, RunDirectoryInUse
from prompt_learning.files import atomic_write_json
from prompt_learning.methods import PromptMethod
from prompt_learning.protocols import Protocol, Task
from prompt_learning.provenance import git_commit, package_versions
from prompt_learning.run_spec import RunSpec

log = logging.getLogger(__name__)
RESULTS_SCHEMA_VERSION = 2  # 2: model_selection is a mapping; metrics hold ece and nll beside acc

NOT_IN_FINGERPRINT = {"paths", "logger", "callbacks", "plugins", "resume", "skip_done", "objective", "hydra",
                      "sweep_id"}
TRAINER_KEYS_NOT_IN_FINGERPRINT = {"enable_progress_bar", "log_every_n_steps",  # how it runs, not what
                                   "compile", "compile_backend"}
DATA_KEYS_NOT_IN_FINGERPRINT = {"num_workers", "root", "eval_cache", "cache_dir"}  # where / how, not what
DATASET_KEYS_NOT_IN_FINGERPRINT = {"root", "file"}  # where the images are: a folder's / CSV's identity is its
# run_name (base name + hash of the absolute path), so "pets" and "/abs/pets" are one run, and moved data resumes


def computed_settings(container: dict[str, Any]) -> dict[str, Any]:
    """Every setting of a resolved config that changes what a run computes (not where it writes, how it
    logs or which callbacks only watch it), flattened to ``group.key``."""
    resolved = {k: v for k, v in container.items() if k not in NOT_IN_FINGERPRINT}
    resolved["trainer"] = {k: v for k, v in resolved["trainer"].items() if k not in TRAINER_KEYS_NOT_IN_FINGERPRINT}
    resolved["data"] = {k: v for k, v in resolved["data"].items() if k not in DATA_KEYS_NOT_IN_FINGERPRINT}
    if isinstance(resolved.get("dataset"), dict):
        resolved["dataset"] = {k: v for k, v in resolved["dataset"].items()
                               if k not in DATASET_KEYS_NOT_IN_FINGERPRINT}
    if not (resolved["data"].get("feature_cache") or {}).get("train_views"):
        resolved["data"].pop("feature_cache", None)  # off: the fingerprints of runs from before the option stay
    for key in ("unlabeled", "transductive"):  # null (the method decides): as before the options existed
        if resolved["data"].get(key, 0) is None:
            resolved["data"].pop(key)
    changing = training_callbacks(container.get("callbacks"))  # early stopping changes the result; monitors do not
    if changing:
        resolved["callbacks"] = changing  # (absent when none: the fingerprints of runs from before callbacks stay)
    flat: dict[str, Any] = {}
    for group, value in resolved.items():
        if isinstance(value, dict):
            flat.update({f"{group}.{k}": v for k, v in value.items()})
        else:
            flat[group] = value
    return flat


def run_fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checkpoint_identity(last: Path, run_dir: Path) -> dict[str, Any]:
    """The ``prompt_learning`` entry (fingerprint, settings) of a checkpoint; a file torch cannot read (cut short
    by a killed run, or not a checkpoint at all) is one FormatError naming it and the two ways out."""
    fix = (f"Pass resume=false to start over in {run_dir}, or delete {last} (it was probably cut short when a run "
           f"was killed while writing it).")
    try:
        checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch / pickle / zipfile errors of a damaged file
        reason = str(exc).split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"Cannot read the checkpoint {str(last)!r} ({reason}). {fix}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("prompt_learning", {}), dict):
        raise FormatError(f"{last}: expected a Lightning checkpoint (a dict with a 'prompt_learning' entry), got "
                          f"{type(checkpoint).__name__}. {fix}")
    return checkpoint.get("prompt_learning", {})


def resume_checkpoint(resume: bool, run_dir: Path, settings: dict[str, Any]) -> str | None:
    """``last.ckpt`` of this run directory when resuming is on and it was written by the same settings."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not (resume and last.is_file()):
        return None
    saved = _checkpoint_identity(last, run_dir)
    if saved.get("fingerprint") != run_fingerprint(settings):
        before = saved.get("settings", {})
        changed = [f"{k}: {before.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(before) | set(settings))
                   if before.get(k) != settings.get(k)]
        raise RunDirectoryInUse(f"{last} was written with other settings ({'; '.join(changed[:5]) or 'unknown'}), "
                                 f"so it cannot be resumed. Pass resume=false to start over in {run_dir}, or "
                                 f"paths.output_dir=<another dir> to keep both runs.")
    log.info("Resuming from %s", last)
    return str(last)


def model_selection(spec: RunSpec, method: PromptMethod, fit: dict[str, Any] | None = None) -> dict[str, Any]:
    """How the tested model was chosen, for results.json (docs/protocols.md, "Model selection"): ``checkpoint``,
    the weights tested (``last_epoch``: those after the last epoch trained, no checkpoint is reloaded;
    ``closed_form_fit``; ``not_trained``), ``selected_by``, what chose anything on data besides training (a
    training callback's monitored metric, a closed-form fit that reports a ``val_acc``, the ``calibrate``
    stage) -> the split it read, and ``selection_splits``, those splits. The test split is never one."""
    sgd = method.trainable and not method.fits_in_closed_form
    checkpoint = "last_epoch" if sgd else "closed_form_fit" if method.fits_in_closed_form else "not_trained"
    selected: dict[str, str] = {}
    if sgd:  # e.g. early stopping on val/acc: the last epoch trained is the one it stopped at
        for key, entry in training_callbacks(spec.container.get("callbacks")).items():
            monitor = entry.get("monitor")
            if isinstance(monitor, str):
                selected[f"callbacks.{key} ({monitor})"] = "val" if monitor.startswith("val/") else "train"
    if fit and fit.get("val_acc") is not None:  # e.g. the linear probe's C searched on val
        selected["fit"] = "val"
    if method.calibrates:  # reads the validation split only (engine/stages.py ValidationOnly)
        selected["calibrate"] = "val"
    return {"checkpoint": checkpoint, "selection_splits": sorted(set(selected.values())), "selected_by": selected}


def results_record(spec: RunSpec, protocol: Protocol, method: PromptMethod, task: Task, results: dict[str, Any],
                   zero_shot: dict[str, Any] | None, fingerprint: str, fit: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The content of results.json (README, "What a run writes"), before the run's timings are added. ``fit``:
    the summary of a closed-form fit (its ``val_acc`` says it selected on the validation split)."""
    dataset = spec.dataset_name
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "method": method.name,
        "method_config": dataclasses.asdict(method.cfg),
        "backbone": {"name": spec.backbone.name, **method.backbone.identity()},
        "dataset": dataset, "dataset_info": task.dataset_info, "protocol": protocol.name,
        "shots": spec.shots, "seed": spec.seed, **results, **protocol.record_fields(task, dataset),
        "zero_shot": zero_shot, "model_selection": model_selection(spec, method, fit),
        "classes": {"train": len(task.train_classes), **{e.name: len(e.classes) for e in task.evals}},
        "n_train_images": len(task.train), "fingerprint": fingerprint,
        # how training used labels: transductive runs saw the test classes' images (unlabeled); tables mark them
        "training_data": task.training_data, "transductive": bool(task.training_data.get("transductive")),
        "sweeps": [spec.container["sweep_id"]] if spec.container.get("sweep_id") else [],
        "config": spec.container, "git_commit": git_commit(), "versions": package_versions(),
    }


def add_to_sweep(results_path: Path, record: dict[str, Any], sweep_id: str | None) -> dict[str, Any]:
    """A finished run skipped by a sweep still belongs to it: add the sweep's id to the record's ``sweeps``
    (rewritten atomically), so that the sweep's table holds every one of its points."""
    if not sweep_id or sweep_id in record.get("sweeps", []):
        return record
    record = {**record, "sweeps": [*record.get("sweeps", []), sweep_id]}
    atomic_write_json(results_path, record)
    return record


def finished_results(run_dir: Path) -> Path:
    """``<run_dir>/results.json``, or a user error when ``run_dir`` is not a finished run."""
    results_path = Path(run_dir).expanduser() / "results.json"
    if not results_path.is_file():
        raise ConfigurationError(f"No results.json in {str(run_dir)!r}; point run_dir at a finished run.")
    return results_path
