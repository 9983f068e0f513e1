"""Seed ensembles: test several finished runs as one model (UPL reports a 16-seed ensemble; it is also the fair
way to compare against one). Each run's export scores the same test sets on the same backbone; the ensemble's
prediction for an image is the argmax of the mean over runs of the softmax probabilities (``combine="probs"``) or
of the logits (``combine="logits"``). Any method: a test-time-adaptive one adapts per image, as in its own test.

The ensemble's probabilities, which its ECE and NLL are computed from, are the ones its prediction is the argmax
of: the mean of the members' probabilities, p = (1/M) sum_m p_m (``probs``, computed as a log-sum-exp of the
members' log-probabilities, so a tiny probability stays finite), or softmax of the mean logits (``logits``). A
member whose logits are log-probabilities (``logits_are_log_probs``) contributes exp(logits) as its p_m and its
log-probabilities as its logits.

The runs must share the dataset, the protocol (its eval sets and targets) and the backbone's identity; they may
differ in anything else (seed, method, hyperparameters). The result is written to
``<common parent of the runs>/ensemble-<hash of the run directories>.json``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from prompt_learning.engine.bookkeeping import DATASET_KEYS_NOT_IN_FINGERPRINT, finished_results
from prompt_learning.engine.builders import build_data
from prompt_learning.engine.evaluation import with_calibration
from prompt_learning.engine.module import CalibrationMetrics, log_probabilities
from prompt_learning.engine.setup import build_backbone
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method
from prompt_learning.files import atomic_write_json
from prompt_learning.formats import FormatError, load_json_file
from prompt_learning.methods import PromptMethod
from prompt_learning.methods.stages import adapted_logits
from prompt_learning.progress import Progress
from prompt_learning.protocols import get_protocol
from prompt_learning.run_spec import RunSpec

COMBINES = ("probs", "logits")
MUST_MATCH = ("dataset", "protocol", "backbone")  # config sections every member shares


def member_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a finished run recorded in its results.json."""
    record = load_json_file(finished_results(run_dir), "results file")
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise FormatError(f"{Path(run_dir) / 'results.json'} has no 'config' object; run the training again.")
    return record["config"]


def check_members(run_dirs: Sequence[Path], configs: Sequence[dict[str, Any]]) -> None:
    """Refuse members that differ in dataset, protocol or backbone, naming the run and the section."""
    if len(run_dirs) < 2:
        raise ConfigurationError(f"A seed ensemble needs at least two finished runs; got {len(run_dirs)}.")
    if len({Path(d).resolve() for d in run_dirs}) != len(run_dirs):
        raise ConfigurationError("The same run directory is given twice; list each run once.")
    random_weights = not (configs[0].get("backbone") or {}).get("pretrained")
    if random_weights and len({c.get("seed") for c in configs}) > 1:
        raise ConfigurationError(f"{run_dirs[0]} was trained on a backbone with random weights (backbone.pretrained "
                                 f"is empty), which every seed draws anew: its members do not share a backbone. "
                                 f"Ensemble runs of a pretrained or packaged backbone.")
    for run_dir, config in zip(run_dirs[1:], configs[1:], strict=True):
        for section in MUST_MATCH:
            if comparable(config, section) != comparable(configs[0], section):
                raise ConfigurationError(f"{run_dir} has another {section} than {run_dirs[0]}: an ensemble's members "
                                         f"must be tested on the same data with the same backbone.")


def comparable(config: dict[str, Any], section: str) -> Any:
    """A config section as members must share it: the dataset without where its files are (another machine's
    data root holds the same images)."""
    value = config.get(section)
    if section == "dataset" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in DATASET_KEYS_NOT_IN_FINGERPRINT}
    return value


@torch.no_grad()
def member_scores(method: PromptMethod, loader: Any, classes: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, C) float32 logits of one member over one eval set (log-probabilities for a method that declares
    ``logits_are_log_probs``), and the (N,) labels."""
    method.eval()
    scores, labels = [], []
    text = None if method.conditional_text or method.test_time_adaptive else method.encode_classes(classes)
    for images, y in loader:
        images = images.to(device)
        if method.test_time_adaptive:
            samples = images if images.dim() == 5 else images.unsqueeze(1)  # (B, 1 + V, 3, H, W)
            logits = torch.cat([adapted_logits(method, s, classes) for s in samples])  # (B, C)
        else:
            logits = method(images, classes, text).logits  # (B, C)
        scores.append(logits.float())
        labels.append(y)
    if method.test_time_adaptive:
        method.reset()
    return torch.cat(scores).cpu(), torch.cat(labels)


def combined(totals: dict[str, Tensor], log_mix: dict[str, Tensor], logits: Tensor, method: PromptMethod,
             combine: str, name: str) -> None:
    """Add one member's (N, C) ``logits`` over eval set ``name`` to the running sums: ``totals`` (probabilities
    or logits: what the prediction is the argmax of) and, for ``probs``, ``log_mix``: log sum_m p_m."""
    if combine == "logits":
        scores = logits
    else:
        log_p = log_probabilities(logits, method.logits_are_log_probs)  # (N, C)
        scores = logits.exp() if method.logits_are_log_probs else logits.softmax(-1)  # (N, C)
        log_mix[name] = torch.logaddexp(log_mix[name], log_p) if name in log_mix else log_p
    totals[name] = totals[name] + scores if name in totals else scores


def ensemble_calibration(totals: Tensor, log_mix: Tensor | None, labels: Tensor, members: int
                         ) -> dict[str, float | None]:
    """ECE (%) and NLL (nats) of the ensemble's probabilities (module docstring) over one eval set, computed
    by the same metrics as a run's test."""
    if log_mix is not None:  # probs: log((1/M) sum_m p_m)
        log_p = log_mix - math.log(members)  # (N, C)
    else:  # logits: log_softmax of the mean logits
        log_p = (totals / members).log_softmax(-1)  # (N, C)
    metrics = CalibrationMetrics(totals.shape[-1])
    metrics.update(log_p, labels)
    return metrics.compute()


def evaluate_ensemble(run_dirs: Sequence[str | Path], combine: str = "probs") -> dict[str, Any]:
    """Accuracy, ECE and NLL of the ensemble of ``run_dirs`` on each eval set (summarised by the protocol from
    the accuracies: HM, target mean); written to ``ensemble-<hash>.json`` beside the runs. Returns the record."""
    if combine not in COMBINES:
        raise ConfigurationError(f"combine={combine!r}; choose one of {COMBINES}.")
    run_dirs = [Path(d).expanduser() for d in run_dirs]
    configs = [member_config(d) for d in run_dirs]
    check_members(run_dirs, configs)
    spec = RunSpec.from_container(configs[0])  # results.json holds the resolved config
    L.seed_everything(spec.seed, workers=True, verbose=False)  # the first member's backbone, as its run built it
    backbone = build_backbone(spec)
    task, dm = build_data(spec, backbone)
    device = backbone.device
    totals: dict[str, Tensor] = {}  # eval name -> (N, C) sum over members of probabilities or logits
    log_mix: dict[str, Tensor] = {}  # probs: eval name -> (N, C) log sum_m p_m
    labels: dict[str, Tensor] = {}
    with Progress("seed ensemble", len(run_dirs), "run", noun="runs") as progress:
        for run_dir in run_dirs:
            method = load_method(run_dir / "export", backbone)
            dm.use_test_views(method)  # (1 + V) views per test image for test-time adaptation
            for e, loader in zip(task.evals, dm.test_dataloader(), strict=True):
                method.check_classes(e.classes)
                logits, labels[e.name] = member_scores(method, loader, e.classes, device)  # (N, C)
                combined(totals, log_mix, logits, method, combine, e.name)
            progress.advance(1)
    accuracies = {name: 100.0 * float((totals[name].argmax(-1) == labels[name]).float().mean()) for name in totals}
    calibration = {name: ensemble_calibration(totals[name], log_mix.get(name), labels[name], len(run_dirs))
                   for name in totals}
    summary = with_calibration(get_protocol(spec.protocol.name).summarize(accuracies, task), calibration)
    record = {"ensemble": [str(d) for d in run_dirs], "combine": combine, "members": len(run_dirs),
              "methods": sorted({c["method"]["name"] for c in configs}), "seeds": [c.get("seed") for c in configs],
              "dataset": spec.dataset_name, **summary, "evaluated_at": datetime.now(UTC).isoformat()}
    atomic_write_json(ensemble_path(run_dirs), record)
    return record


def ensemble_path(run_dirs: Sequence[Path]) -> Path:
    """``<common parent>/ensemble-<8 hex of the sorted run directories>.json``."""
    resolved = sorted(str(Path(d).resolve()) for d in run_dirs)
    digest = hashlib.sha256("\n".join(resolved).encode()).hexdigest()[:8]
    return Path(os.path.commonpath(resolved)) / f"ensemble-{digest}.json"
