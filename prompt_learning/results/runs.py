"""Which row of the aggregate a run belongs to: its dataset label, its sweep point, and one record per seed.

* your own image folders and CSV files are told apart by their run name, benchmarks keep their name;
* points of a hyperparameter sweep are rows of their own (``coop (n_ctx=8)``), not seeds of one row;
* two records of one (group, seed): the latest ``started_at`` wins, with a warning;
* transductive runs (trained on unlabeled images of the classes they are tested on) are rows of their own,
  ``promptkd [transductive]``: never averaged with, or read as, inductive results; so are runs trained with the
  names of classes they are tested on, ``mocoop [unseen names]``: not plain base-to-new results.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

TRANSDUCTIVE_MARK = " [transductive]"
"""Appended to the method of a transductive run's row (results.json ``transductive``)."""
UNSEEN_NAMES_MARK = " [unseen names]"
"""Appended to the method of a run trained with the names of classes it was tested on but not trained on (results.json
``saw_unseen_class_names``, e.g. MoCoOp's text loss over base-to-new's new class names)."""


def marked_method(record: dict[str, Any]) -> str:
    """The record's method with the marks of what its training saw beyond the training classes."""
    return (record["method"] + (TRANSDUCTIVE_MARK if record.get("transductive") is True else "")
            + (UNSEEN_NAMES_MARK if record.get("saw_unseen_class_names") is True else ""))

SWEPT_SETTINGS = (("optim",), ("trainer", "max_epochs"), ("data", "batch_size"))
"""Parts of a run's config, besides its method config, that a hyperparameter sweep varies."""


def group_key(record: dict[str, Any]) -> tuple[str, str, str, str, int]:
    """(protocol, dataset, method, backbone name, shots): the runs of one group differ only by seed."""
    return record["protocol"], record["dataset"], record["method"], record["backbone"]["name"], record["shots"]


def dataset_label(record: dict[str, Any]) -> str:
    """The dataset a run's row belongs to: your own folders and CSV files are told apart by their run name
    (``folder-<base name>-<path hash>``), benchmarks keep their name."""
    config = record.get("config")
    dataset = config.get("dataset") if isinstance(config, dict) else None
    run_name = dataset.get("run_name") if isinstance(dataset, dict) else None
    return run_name if isinstance(run_name, str) and run_name else record["dataset"]


def _settings(record: dict[str, Any]) -> dict[str, str]:
    """The record's method config and swept settings, flattened to ``key -> JSON value``."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = json.dumps(value, sort_keys=True, default=str)

    walk("", record.get("method_config") or {})
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    for path in SWEPT_SETTINGS:
        value: Any = config
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            walk(".".join(path), value)
    return flat


def label_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records whose ``dataset`` is :func:`dataset_label` and whose ``method`` names the swept
    settings, such as ``coop (n_ctx=8)`` in a sweep over ``method.n_ctx``: points of a sweep are rows of their
    own, not seeds of one row. A setting is swept when it differs between the runs of one (protocol, dataset,
    method, backbone, shots) group; it then labels every run of that method (protocol, backbone, shots) on
    every dataset. Settings that differ only between datasets (per-dataset presets) label nothing."""
    records = [{**r, "dataset": dataset_label(r), "method": marked_method(r)} for r in records]
    settings = [_settings(r) for r in records]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[(r["protocol"], r["method"], r["backbone"]["name"], r["shots"], r["dataset"])].append(i)
    swept: dict[tuple, set[str]] = defaultdict(set)
    for key, members in groups.items():
        keys = {k for i in members for k in settings[i]}
        swept[key[:4]] |= {k for k in keys if len({settings[i].get(k) for i in members}) > 1}
    for i, r in enumerate(records):
        keys = sorted(swept[(r["protocol"], r["method"], r["backbone"]["name"], r["shots"])])
        if keys:
            point = ", ".join(f"{k}={json.loads(settings[i][k]) if k in settings[i] else '-'}" for k in keys)
            r["method"] = f"{r['method']} ({point})"
    return records


def pick_duplicates(records: list[dict[str, Any]], found: list[str]) -> list[dict[str, Any]]:
    """One record per (group, seed): the latest ``started_at`` (then the last path) wins, with a message in
    ``found``."""
    by_run: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_run[(*group_key(r), r["seed"])].append(r)
    kept = []
    for key, runs in by_run.items():
        runs.sort(key=lambda r: (str(r.get("started_at", "")), str(r.get("_path", ""))))
        if len(runs) > 1:
            where = ", ".join(str(r.get("_path", "<in memory>")) for r in runs)
            found.append(f"{len(runs)} results for {key[0]} {key[2]} on {key[1]} (backbone {key[3]}, {key[4]} shots, "
                         f"seed {key[5]}): {where}; kept the latest ({runs[-1].get('_path', 'last given')}).")
        kept.append(runs[-1])
    return kept
