"""Aggregate ``results.json`` files over seeds into Markdown / CSV tables and plots (methods.md §4.4, §5).

Rules (the papers' and CoOp's ``parse_test_res.py``):

* every accuracy is a top-1 percentage; per (protocol, dataset, method, backbone, shots) group we report
  mean, population std (ddof=0, ``np.std``) and n over seeds;
* base-to-new: the per-dataset H is the harmonic mean of the *seed-averaged* base and new accuracies, and the
  "Average" row is B̄ = mean of per-dataset B, N̄ = mean of per-dataset N, H̄ = HM(B̄, N̄) -- never the mean
  of per-dataset H's;
* cross-dataset / domain generalisation: per-target mean ± std, the source accuracy separately, and the
  arithmetic mean of the per-target means;
* few-shot: per dataset × shots mean ± std, and the mean over datasets per shots value.

Groups of one (protocol, method, backbone, shots) whose seed sets differ are never averaged silently: each
such difference is a :class:`AggregationWarning` and a line in the Markdown output.

Library code: no Lightning, no Hydra; matplotlib is imported only inside the plotting functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.files import atomic_write_bytes
from prompt_learning.protocols.task import TRANSFER_PROTOCOLS, harmonic_mean

PROTOCOL_ORDER = ("base2new", "few_shot", "cross_dataset", "domain_gen")
PROTOCOL_TITLES = {"base2new": "Base-to-new generalisation", "few_shot": "Few-shot learning",
                   "cross_dataset": "Cross-dataset transfer", "domain_gen": "Domain generalisation"}
# methods.md §4.1 order (the papers' table order); other datasets follow alphabetically
DATASET_ORDER = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch",
                 "imagenet_a", "imagenet_r")
CSV_COLUMNS = ("protocol", "dataset", "method", "backbone", "shots", "metric", "mean", "std", "n", "seeds")
RESULTS_FILE = "results.json"


class AggregationWarning(UserWarning):
    """A results file was skipped, or seeds differ between groups that are compared or averaged."""


def _warn(message: str) -> None:
    warnings.warn(message, AggregationWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------- statistics

def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def population_std(values: Sequence[float]) -> float:
    """``np.std`` (ddof=0), as CoOp's ``parse_test_res.py``."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


@dataclass(frozen=True)
class Stat:
    """One metric of one group over its seeds."""

    mean: float
    std: float
    n: int
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, by_seed: dict[int, float]) -> Stat:
        seeds = tuple(sorted(by_seed))
        values = [by_seed[s] for s in seeds]
        return cls(mean(values), population_std(values), len(values), seeds)

    def cell(self, flag: bool = False) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" + (" †" if flag else "")


# ------------------------------------------------------------------------------------------------- loading

def record_problem(record: Any) -> str | None:
    """Why a results record cannot be aggregated, or None when it can."""
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [k for k in ("method", "backbone", "dataset", "protocol", "shots", "seed", "metrics") if k not in record]
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
    needed = {"base2new": ("base", "new"), "few_shot": ("all",)}.get(record["protocol"], ())
    if record["protocol"] in TRANSFER_PROTOCOLS:
        needed = (record.get("source", record["dataset"]),)
        if not isinstance(needed[0], str):
            return "source is not a string"
        targets = record.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            return "targets is not a list of dataset names"
    absent = [n for n in needed if n not in metrics]
    if absent:
        return f"{record['protocol']} result without metric(s) {', '.join(map(str, absent))}"
    return None


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
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        else:
            problem = record_problem(record)
        if problem:
            skipped += 1
            _warn(f"Skipped {path}: {problem}.")
            continue
        records.append({**record, "_path": str(path)})
    if not records:
        more = f" ({skipped} skipped, see the warnings)" if skipped else ""
        raise DataError(f"No usable {RESULTS_FILE} under {str(root)!r}{more}; each finished run writes one in its "
                        f"run directory.")
    return records


# ----------------------------------------------------------------------------------------------- aggregation

@dataclass
class Group:
    """One (protocol, dataset, method, backbone, shots) cell over its seeds."""

    protocol: str
    dataset: str
    method: str
    backbone: str
    shots: int
    metrics: dict[str, Stat]  # eval name -> stat, in the records' order
    hm: float | None = None  # base2new: HM of the seed-averaged base and new (not the mean of per-seed HMs)
    source: str | None = None  # cross_dataset / domain_gen
    targets: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return self.protocol, self.dataset, self.method, self.backbone, self.shots

    @property
    def family(self) -> tuple[str, str, str, int]:
        """Groups that should share one seed set: same protocol, method, backbone and shots."""
        return self.protocol, self.method, self.backbone, self.shots

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({s for stat in self.metrics.values() for s in stat.seeds}))


@dataclass(frozen=True)
class Base2NewAverage:
    """The "Average" row: B̄, N̄ over the datasets present and H̄ = HM(B̄, N̄)."""

    method: str
    backbone: str
    shots: int
    base: float
    new: float
    hm: float
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class FewShotAverage:
    """Mean over datasets of the per-dataset seed means, for one shots value."""

    method: str
    backbone: str
    shots: int
    mean: float
    datasets: tuple[str, ...]


@dataclass(frozen=True)
class TransferSummary:
    """Cross-dataset / DG: source accuracy, per-target stats and the mean of the per-target means."""

    protocol: str
    dataset: str
    method: str
    backbone: str
    shots: int
    source: str
    source_acc: Stat
    targets: dict[str, Stat]
    average: float | None  # None when no target was evaluated


@dataclass
class Aggregate:
    """Every table the outputs are made of."""

    groups: list[Group]
    base2new_averages: list[Base2NewAverage] = field(default_factory=list)
    few_shot_averages: list[FewShotAverage] = field(default_factory=list)
    transfer: list[TransferSummary] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flagged: set[tuple[str, str, str, str, int]] = field(default_factory=set)  # group keys with odd seed sets
    n_records: int = 0

    def group(self, protocol: str, dataset: str, method: str, backbone: str, shots: int) -> Group | None:
        return next((g for g in self.groups if g.key == (protocol, dataset, method, backbone, shots)), None)


def dataset_sort_key(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _protocol_sort_key(name: str) -> tuple[int, str]:
    return (PROTOCOL_ORDER.index(name) if name in PROTOCOL_ORDER else len(PROTOCOL_ORDER), name)


def _group_sort_key(g: Group) -> tuple:
    return _protocol_sort_key(g.protocol), g.backbone, g.shots, dataset_sort_key(g.dataset), g.method


def _seeds_text(seeds: Iterable[int]) -> str:
    return "[" + ", ".join(map(str, seeds)) + "]"


def _label(family: tuple[str, str, str, int]) -> str:
    protocol, method, backbone, shots = family
    return f"{protocol} {method} (backbone {backbone}, {shots} shots)"


def _dataset_label(record: dict[str, Any]) -> str:
    """The dataset a run's row belongs to: your own folders and CSV files are told apart by their run name
    (``folder-<base name>-<path hash>``), benchmarks keep their name."""
    config = record.get("config")
    dataset = config.get("dataset") if isinstance(config, dict) else None
    run_name = dataset.get("run_name") if isinstance(dataset, dict) else None
    return run_name if isinstance(run_name, str) and run_name else record["dataset"]


SWEPT_SETTINGS = (("optim",), ("trainer", "max_epochs"), ("data", "batch_size"))
"""Parts of a run's config, besides its method config, that a hyperparameter sweep varies."""


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


def _label_runs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the records whose ``dataset`` is :func:`_dataset_label` and whose ``method`` names the swept
    settings, such as ``coop (n_ctx=8)`` in a sweep over ``method.n_ctx``: points of a sweep are rows of their
    own, not seeds of one row. A setting is swept when it differs between the runs of one (protocol, dataset,
    method, backbone, shots) group; it then labels every run of that method (protocol, backbone, shots) on
    every dataset. Settings that differ only between datasets (per-dataset presets) label nothing."""
    records = [{**r, "dataset": _dataset_label(r)} for r in records]
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


def _pick_duplicates(records: list[dict[str, Any]], found: list[str]) -> list[dict[str, Any]]:
    """One record per (group, seed): the latest ``started_at`` (then the last path) wins, with a warning."""
    by_run: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_run[(r["protocol"], r["dataset"], r["method"], r["backbone"]["name"], r["shots"], r["seed"])].append(r)
    kept = []
    for key, runs in by_run.items():
        runs.sort(key=lambda r: (str(r.get("started_at", "")), str(r.get("_path", ""))))
        if len(runs) > 1:
            where = ", ".join(str(r.get("_path", "<in memory>")) for r in runs)
            found.append(f"{len(runs)} results for {key[0]} {key[2]} on {key[1]} (backbone {key[3]}, {key[4]} shots, "
                         f"seed {key[5]}): {where}; kept the latest ({runs[-1].get('_path', 'last given')}).")
        kept.append(runs[-1])
    return kept


def _build_group(runs: list[dict[str, Any]]) -> Group:
    first = runs[0]
    names: dict[str, dict[int, float]] = {}
    for r in runs:
        for name, value in r["metrics"].items():
            names.setdefault(name, {})[r["seed"]] = float(value["acc"])
    metrics = {name: Stat.of(by_seed) for name, by_seed in names.items()}
    group = Group(first["protocol"], first["dataset"], first["method"], first["backbone"]["name"], first["shots"],
                  metrics)
    if group.protocol == "base2new":
        group.hm = harmonic_mean(metrics["base"].mean, metrics["new"].mean)
    elif group.protocol in TRANSFER_PROTOCOLS:
        group.source = str(first.get("source", group.dataset))
        listed = [t for r in runs for t in r.get("targets") or [n for n in r["metrics"] if n != group.source]]
        group.targets = tuple(dict.fromkeys(t for t in listed if t in metrics and t != group.source))
    return group


def _check_seeds(groups: list[Group], found: list[str]) -> set[tuple]:
    """Warn about groups whose seed set differs from their family's most common one, or within a group."""
    flagged = set()
    families: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        families[g.family].append(g)
        short = [f"{name} {_seeds_text(s.seeds)}" for name, s in g.metrics.items() if s.seeds != g.seeds]
        if short:
            flagged.add(g.key)
            found.append(f"{_label(g.family)} on {g.dataset}: metrics evaluated on fewer seeds than the group's "
                         f"{_seeds_text(g.seeds)}: {', '.join(short)}.")
    for family, members in families.items():
        if len(members) < 2:
            continue
        counts = Counter(g.seeds for g in members)
        # the most common seed set; ties go to the larger set, then the smaller seeds
        reference = max(counts, key=lambda s: (counts[s], len(s), [-x for x in s]))
        for g in members:
            if g.seeds == reference:
                continue
            flagged.add(g.key)
            how = "fewer seeds than" if len(g.seeds) < len(reference) else "other seeds than"
            found.append(f"{_label(family)} on {g.dataset}: seeds {_seeds_text(g.seeds)} (n={len(g.seeds)}), "
                         f"{how} the {_seeds_text(reference)} (n={len(reference)}) of {counts[reference]} other "
                         f"dataset(s); its mean is over n={len(g.seeds)} seeds.")
    return flagged


def _check_coverage(kind: str, covered: dict[tuple, tuple[str, ...]], found: list[str]) -> None:
    """Averages over different dataset sets are not comparable: say so."""
    sets = set(covered.values())
    if len(sets) > 1:
        detail = "; ".join(f"{' '.join(map(str, k))}: {len(v)} ({', '.join(v)})" for k, v in covered.items())
        found.append(f"{kind} averages cover different datasets, so they are not directly comparable: {detail}.")


def aggregate(records: Iterable[dict[str, Any]]) -> Aggregate:
    """Seed statistics per group, base-to-new / few-shot averages and transfer summaries (module docstring)."""
    found: list[str] = []
    usable = []
    for r in records:
        problem = record_problem(r)
        if problem:
            found.append(f"Skipped {r.get('_path', 'a record') if isinstance(r, dict) else 'a record'}: {problem}.")
        else:
            usable.append(r)
    usable = _pick_duplicates(_label_runs(usable), found)
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in usable:
        by_group[(r["protocol"], r["dataset"], r["method"], r["backbone"]["name"], r["shots"])].append(r)
    groups = sorted((_build_group(runs) for runs in by_group.values()), key=_group_sort_key)
    agg = Aggregate(groups, n_records=len(usable))
    agg.flagged = _check_seeds(groups, found)

    b2n: dict[tuple, list[Group]] = defaultdict(list)
    fs: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        if g.protocol == "base2new":
            b2n[(g.method, g.backbone, g.shots)].append(g)
        elif g.protocol == "few_shot":
            fs[(g.method, g.backbone, g.shots)].append(g)
        elif g.protocol in TRANSFER_PROTOCOLS:
            targets = {t: g.metrics[t] for t in g.targets}
            average = mean([s.mean for s in targets.values()]) if targets else None
            agg.transfer.append(TransferSummary(g.protocol, g.dataset, g.method, g.backbone, g.shots, str(g.source),
                                                g.metrics[str(g.source)], targets, average))
    for (method, backbone, shots), members in b2n.items():
        base = mean([g.metrics["base"].mean for g in members])
        new = mean([g.metrics["new"].mean for g in members])
        agg.base2new_averages.append(Base2NewAverage(method, backbone, shots, base, new, harmonic_mean(base, new),
                                                     tuple(g.dataset for g in members)))
    for (method, backbone, shots), members in fs.items():
        agg.few_shot_averages.append(FewShotAverage(method, backbone, shots, mean([g.metrics["all"].mean for g in members]),
                                                    tuple(g.dataset for g in members)))
    for backbone, shots in sorted({(a.backbone, a.shots) for a in agg.base2new_averages}):
        _check_coverage(f"Base-to-new (backbone {backbone}, {shots} shots)",
                        {(a.method,): a.datasets for a in agg.base2new_averages
                         if (a.backbone, a.shots) == (backbone, shots)}, found)
    for backbone in sorted({a.backbone for a in agg.few_shot_averages}):
        _check_coverage(f"Few-shot (backbone {backbone})",
                        {(a.method, f"{a.shots}-shot"): a.datasets for a in agg.few_shot_averages
                         if a.backbone == backbone}, found)
    for message in found:
        _warn(message)
    agg.warnings = found
    return agg


# --------------------------------------------------------------------------------------------------- outputs

def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    right = ["---"] + ["--:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _row_seeds(groups: Iterable[Group]) -> str:
    sets = {g.seeds for g in groups}
    return _seeds_text(next(iter(sets))) if len(sets) == 1 else "mixed †"


def _base2new_md(agg: Aggregate, groups: list[Group]) -> list[str]:
    lines = ["HM per dataset = 2·B·N/(B+N) of the seed-averaged B and N. Average: B̄ and N̄ are the means of the "
             "per-dataset B and N over the datasets listed in its last column, and H̄ = HM(B̄, N̄) "
             "(the harmonic mean of the averages, not the mean of the per-dataset H).", ""]
    for backbone, shots in sorted({(g.backbone, g.shots) for g in groups}):
        cell = [g for g in groups if (g.backbone, g.shots) == (backbone, shots)]
        datasets = sorted({g.dataset for g in cell}, key=dataset_sort_key)
        methods = sorted({g.method for g in cell})
        header = ["method", "seeds"] + [f"{d} {m}" for d in datasets for m in ("B", "N", "H")]
        header += ["Avg B", "Avg N", "Avg H", "Average over"]
        rows = []
        for method in methods:
            row = [method, _row_seeds(g for g in cell if g.method == method)]
            for d in datasets:
                g = agg.group("base2new", d, method, backbone, shots)
                flag = g is not None and g.key in agg.flagged
                row += (["–"] * 3 if g is None or g.hm is None else
                        [g.metrics["base"].cell(flag), g.metrics["new"].cell(flag), f"{g.hm:.2f}"])
            avg = next(a for a in agg.base2new_averages if (a.method, a.backbone, a.shots) == (method, backbone, shots))
            row += [f"{avg.base:.2f}", f"{avg.new:.2f}", f"{avg.hm:.2f}",
                    f"{len(avg.datasets)} of {len(datasets)} datasets"]
            rows.append(row)
        lines += [f"### Backbone `{backbone}`, {shots} shots", "", *_md_table(header, rows)]
    return lines


def _few_shot_md(agg: Aggregate, groups: list[Group]) -> list[str]:
    lines = ["Top-1 accuracy on all classes per dataset and shots; Average = mean over the datasets counted in the "
             "last column of the per-dataset means.", ""]
    for backbone in sorted({g.backbone for g in groups}):
        cell = [g for g in groups if g.backbone == backbone]
        datasets = sorted({g.dataset for g in cell}, key=dataset_sort_key)
        header = ["method", "shots", "seeds", *datasets, "Average", "Average over"]
        rows = []
        for method, shots in sorted({(g.method, g.shots) for g in cell}):
            row = [method, str(shots), _row_seeds(g for g in cell if (g.method, g.shots) == (method, shots))]
            for d in datasets:
                g = agg.group("few_shot", d, method, backbone, shots)
                row.append("–" if g is None else g.metrics["all"].cell(g.key in agg.flagged))
            avg = next(a for a in agg.few_shot_averages if (a.method, a.backbone, a.shots) == (method, backbone, shots))
            rows.append([*row, f"{avg.mean:.2f}", f"{len(avg.datasets)} of {len(datasets)} datasets"])
        lines += [f"### Backbone `{backbone}`", "", *_md_table(header, rows)]
    return lines


def _transfer_md(agg: Aggregate, protocol: str) -> list[str]:
    summaries = [t for t in agg.transfer if t.protocol == protocol]
    lines = ["Source accuracy shown separately; Average = arithmetic mean of the per-target means over the targets "
             "counted in the last column.", ""]
    for dataset, backbone, shots in sorted({(t.dataset, t.backbone, t.shots) for t in summaries}):
        cell = [t for t in summaries if (t.dataset, t.backbone, t.shots) == (dataset, backbone, shots)]
        sources = sorted({t.source for t in cell})
        targets = sorted({n for t in cell for n in t.targets}, key=dataset_sort_key)
        header = ["method", "seeds", f"{'/'.join(sources)} (source)", *targets, "Average", "Average over"]
        rows = []
        for t in sorted(cell, key=lambda t: t.method):
            g = agg.group(protocol, dataset, t.method, backbone, shots)
            flag = g is not None and g.key in agg.flagged
            row = [t.method, _seeds_text(g.seeds) if g else "", t.source_acc.cell(flag)]
            row += [t.targets[n].cell(flag) if n in t.targets else "–" for n in targets]
            row += ["–" if t.average is None else f"{t.average:.2f}", f"{len(t.targets)} of {len(targets)} targets"]
            rows.append(row)
        lines += [f"### Trained on `{dataset}`, backbone `{backbone}`, {shots} shots", "", *_md_table(header, rows)]
    return lines


def _other_md(agg: Aggregate, groups: list[Group]) -> list[str]:
    rows = [[g.method, g.dataset, g.backbone, str(g.shots), _seeds_text(g.seeds),
             ", ".join(f"{n} {s.cell(g.key in agg.flagged)}" for n, s in g.metrics.items())] for g in groups]
    return _md_table(["method", "dataset", "backbone", "shots", "seeds", "metrics"], rows)


def to_markdown(agg: Aggregate) -> str:
    lines = ["# Results aggregate", "",
             f"{agg.n_records} runs in {len(agg.groups)} groups. Top-1 accuracy (%), mean ± population std "
             "(ddof=0, as CoOp's parse_test_res.py) over seeds. † marks a cell whose seed set differs from the "
             "most common one for its method, backbone and shots (see Warnings).", ""]
    if agg.warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in agg.warnings), ""]
    for protocol in sorted({g.protocol for g in agg.groups}, key=_protocol_sort_key):
        groups = [g for g in agg.groups if g.protocol == protocol]
        lines += [f"## {PROTOCOL_TITLES.get(protocol, protocol)} (`{protocol}`)", ""]
        if protocol == "base2new":
            lines += _base2new_md(agg, groups)
        elif protocol == "few_shot":
            lines += _few_shot_md(agg, groups)
        elif protocol in TRANSFER_PROTOCOLS:
            lines += _transfer_md(agg, protocol)
        else:
            lines += _other_md(agg, groups)
    return "\n".join(lines).rstrip() + "\n"


def csv_rows(agg: Aggregate) -> list[dict[str, Any]]:
    """One row per group × metric (CSV_COLUMNS). base2new groups also get metric ``hm``: the HM of the
    seed-averaged base and new, with an empty std (it is not a per-seed statistic)."""
    rows = []
    for g in agg.groups:
        common = {"protocol": g.protocol, "dataset": g.dataset, "method": g.method, "backbone": g.backbone,
                  "shots": g.shots}
        for name, s in g.metrics.items():
            rows.append({**common, "metric": name, "mean": round(s.mean, 6), "std": round(s.std, 6), "n": s.n,
                         "seeds": ";".join(map(str, s.seeds))})
        if g.hm is not None:
            base, new = g.metrics["base"], g.metrics["new"]
            seeds = sorted(set(base.seeds) & set(new.seeds))
            rows.append({**common, "metric": "hm", "mean": round(g.hm, 6), "std": "", "n": len(seeds),
                         "seeds": ";".join(map(str, seeds))})
    return rows


def to_csv(agg: Aggregate) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(agg))
    return buf.getvalue()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``: the Agg backend without touching pyplot's global backend."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigurationError("Plots need matplotlib, which is not installed: run `uv sync --extra plots` "
                                 "(or pass --no-plots / plots=False).") from exc
    return Figure, FigureCanvasAgg


def _png(fig: Any, canvas_cls: Any) -> bytes:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def plot_base2new(agg: Aggregate, out_dir: str | Path) -> list[Path]:
    """Average base / new / HM bars per method, one ``base2new_<backbone>_shots<K>.png`` per backbone × shots."""
    Figure, Canvas = _matplotlib()
    written = []
    for backbone, shots in sorted({(a.backbone, a.shots) for a in agg.base2new_averages}):
        avgs = sorted((a for a in agg.base2new_averages if (a.backbone, a.shots) == (backbone, shots)),
                      key=lambda a: a.method)
        fig = Figure(figsize=(max(4.0, 1.3 * len(avgs) + 2), 3.6))
        ax = fig.add_subplot()
        width = 0.27
        for i, (label, pick) in enumerate((("Base", lambda a: a.base), ("New", lambda a: a.new),
                                           ("HM", lambda a: a.hm))):
            xs = [j + (i - 1) * width for j in range(len(avgs))]
            bars = ax.bar(xs, [pick(a) for a in avgs], width, label=label)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(avgs)), [f"{a.method}\n({len(a.datasets)} ds)" for a in avgs])
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(0, 118)
        ax.set_title(f"Base-to-new average, {backbone}, {shots} shots")
        ax.legend(loc="upper center", ncols=3, fontsize=8, frameon=False)
        path = Path(out_dir) / f"base2new_{_safe(backbone)}_shots{shots}.png"
        atomic_write_bytes(path, _png(fig, Canvas))
        written.append(path)
    return written


def plot_few_shot(agg: Aggregate, out_dir: str | Path) -> list[Path]:
    """Accuracy vs shots, one line per method: ``few_shot_<dataset>.png`` and ``few_shot_average.png``."""
    Figure, Canvas = _matplotlib()
    groups = [g for g in agg.groups if g.protocol == "few_shot"]
    if not groups:
        return []
    several = len({g.backbone for g in groups}) > 1
    lines = sorted({(g.method, g.backbone) for g in groups})
    panels: list[tuple[str, dict[tuple[str, str], list[tuple[int, float, float]]]]] = []
    for dataset in sorted({g.dataset for g in groups}, key=dataset_sort_key):
        curves = {k: [(g.shots, g.metrics["all"].mean, g.metrics["all"].std) for g in groups
                      if (g.method, g.backbone, g.dataset) == (*k, dataset)] for k in lines}
        panels.append((dataset, curves))
    panels.append(("average", {k: [(a.shots, a.mean, 0.0) for a in agg.few_shot_averages
                                   if (a.method, a.backbone) == k] for k in lines}))
    written = []
    for name, curves in panels:
        fig = Figure(figsize=(5, 3.6))
        ax = fig.add_subplot()
        all_shots = sorted({p[0] for pts in curves.values() for p in pts})
        for (method, backbone), pts in curves.items():
            if pts:
                pts = sorted(pts)
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                            capsize=3, label=f"{method} ({backbone})" if several else method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_shots, [str(s) for s in all_shots])
        ax.minorticks_off()
        ax.set_xlabel("shots per class")
        ax.set_ylabel("top-1 accuracy (%)")
        title = "Few-shot, average over datasets" if name == "average" else f"Few-shot, {name}"
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = Path(out_dir) / f"few_shot_{_safe(name)}.png"
        atomic_write_bytes(path, _png(fig, Canvas))
        written.append(path)
    return written


def write_outputs(agg: Aggregate, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``aggregate.md``, ``aggregate.csv`` and (``plots=True``) the PNG plots; return their paths."""
    out = Path(out_dir)
    written = [out / "aggregate.md", out / "aggregate.csv"]
    atomic_write_bytes(written[0], to_markdown(agg).encode())
    atomic_write_bytes(written[1], to_csv(agg).encode())
    if plots:
        written += plot_base2new(agg, out) + plot_few_shot(agg, out)
    return written


def print_summary(agg: Aggregate, file: TextIO | None = None) -> None:
    """A few lines per protocol: the averages the papers report, plus the number of warnings."""
    file = file or sys.stdout
    print(f"{agg.n_records} runs, {len(agg.groups)} groups (top-1 %, mean over seeds)", file=file)
    for a in sorted(agg.base2new_averages, key=lambda a: (a.backbone, a.shots, a.method)):
        print(f"base2new  {a.method:<12} {a.backbone} {a.shots}-shot: B {a.base:.2f}  N {a.new:.2f}  "
              f"H {a.hm:.2f}  (average of {len(a.datasets)} datasets)", file=file)
    for f in sorted(agg.few_shot_averages, key=lambda a: (a.backbone, a.method, a.shots)):
        print(f"few_shot  {f.method:<12} {f.backbone} {f.shots}-shot: {f.mean:.2f}  "
              f"(average of {len(f.datasets)} datasets)", file=file)
    for t in sorted(agg.transfer, key=lambda t: (t.protocol, t.backbone, t.shots, t.method)):
        avg = "–" if t.average is None else f"{t.average:.2f}"
        print(f"{t.protocol:<9} {t.method:<12} {t.backbone} {t.shots}-shot: source {t.source} "
              f"{t.source_acc.mean:.2f}, targets {avg}  (average of {len(t.targets)} targets)", file=file)
    if agg.warnings:
        print(f"{len(agg.warnings)} warning(s) (also listed in aggregate.md)", file=file)
