"""Reading and checking ``results.json`` records before aggregation.

A record is usable when it has the fields every run writes (method, backbone name, dataset, protocol, shots,
seed, finite accuracies) and what its protocol needs (``Protocol.record_problem``: e.g. both base and new,
or the source's accuracy). A record of a protocol no code registers is aggregated with the generic table.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import ConfigurationError, DataError, FormatError
from prompt_learning.formats import describe, load_json_file
from prompt_learning.protocols import PROTOCOLS, Protocol, Task
from prompt_learning.registry import import_plugins

RESULTS_FILE = "results.json"
REQUIRED_FIELDS = ("method", "backbone", "dataset", "protocol", "shots", "seed", "metrics")


class AggregationWarning(UserWarning):
    """A results file was skipped, or seeds differ between groups that are compared or averaged."""


def warn(message: str) -> None:
    """An :class:`AggregationWarning` attributed to the caller of the public function that found it."""
    warnings.warn(message, AggregationWarning, stacklevel=3)


class _Unregistered(Protocol):
    """Results of a protocol that is not registered here: the generic table, no summaries, no plots."""

    order = sys.maxsize

    def build_task(self, splits: DatasetSplits, shots: int, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> Task:
        raise ConfigurationError(f"Protocol {self.name!r} is not registered; import the module that registers it.")


_UNREGISTERED: dict[str, Protocol] = {}


def protocol_of(name: str) -> Protocol:
    """The registered protocol ``name``, or a generic stand-in (titled by its name, sorted last)."""
    if name in PROTOCOLS:
        return PROTOCOLS.get(name)
    if name not in _UNREGISTERED:
        _UNREGISTERED[name] = type("UnregisteredProtocol", (_Unregistered,), {"name": name, "title": name})()
    return _UNREGISTERED[name]


def protocol_sort_key(name: str) -> tuple[int, str]:
    """Sections of the aggregate in each protocol's ``order``, then by name."""
    return protocol_of(name).order, name


def record_problem(record: Any) -> str | None:
    """Why a results record cannot be aggregated, or None when it can."""
    if not isinstance(record, dict):
        return f"expected a JSON object (a run's record), got {describe(record)}"
    missing = [k for k in REQUIRED_FIELDS if k not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not isinstance(record["backbone"], dict) or not isinstance(record["backbone"].get("name"), str):
        return "backbone has no name"
    for key in ("method", "dataset", "protocol"):
        if not isinstance(record[key], str):
            return f"{key} is not a string"
    for key in ("shots", "seed"):
        if isinstance(record[key], bool) or not isinstance(record[key], int):
            return f"{key} is not an integer"
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        return "metrics is empty or not an object"
    for name, value in metrics.items():
        acc = value.get("acc") if isinstance(value, dict) else None
        if isinstance(acc, bool) or not isinstance(acc, int | float) or not math.isfinite(acc):
            return f"metrics.{name}.acc is not a number"
    return protocol_of(record["protocol"]).record_problem(record)


def import_record_plugins(record: Any, path: Path) -> None:
    """Import the plugins a run was made with (its config's ``plugins``), so that a protocol registered by
    one aggregates with its own table; a plugin that no longer imports is a warning, and its records get
    the generic table."""
    config = record.get("config") if isinstance(record, dict) else None
    plugins = config.get("plugins") if isinstance(config, dict) else None
    if not plugins or not isinstance(plugins, list):
        return
    try:
        import_plugins(plugins)
    except ConfigurationError as exc:
        warn(f"{path}: {exc}")


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every usable ``results.json`` under ``results_dir`` (recursively), sorted by path.

    Each record is the file's JSON object with the file's path added as ``"_path"``. Files that do not parse or
    lack the fields aggregation needs are skipped with an :class:`AggregationWarning`. Raises
    :class:`ConfigurationError` when the directory does not exist and :class:`DataError` when it holds no
    usable results.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ConfigurationError(f"results_dir {str(root)!r} is not a directory; point it at the runs' output "
                                 f"directory (paths.output_dir, default outputs/).")
    records, skipped = [], 0
    for path in sorted(root.rglob(RESULTS_FILE)):
        if not path.is_file():
            continue
        try:
            record = load_json_file(path, "results file")
        except FormatError as exc:
            skipped += 1
            warn(f"Skipped an unreadable results file: {exc}")
            continue
        import_record_plugins(record, path)
        problem = record_problem(record)
        if problem:
            skipped += 1
            warn(f"Skipped {path}: {problem}; rerun that run, or move the file out of {str(root)!r}.")
            continue
        records.append({**record, "_path": str(path)})
    if not records:
        more = f" ({skipped} skipped, see the warnings)" if skipped else ""
        raise DataError(f"No usable {RESULTS_FILE} under {str(root)!r}{more}; each finished run writes one in its "
                        f"run directory.")
    return records
