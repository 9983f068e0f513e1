"""Aggregate ``results.json`` records over seeds (definitions: docs/protocols.md).

Generic rules, the papers' and CoOp's ``parse_test_res.py``:

* every accuracy is a top-1 percentage; per (protocol, dataset, method, backbone, shots) group we report
  mean, population std (ddof=0, ``np.std``) and n over seeds;
* groups of one (protocol, method, backbone, shots) whose seed sets differ are never averaged silently: each
  such difference is an :class:`AggregationWarning` and a line in the Markdown output.

What is specific to a protocol -- its group fields (base-to-new's H = HM of the seed means), its averages
(base-to-new: H̄ = HM(B̄, N̄), never the mean of per-dataset H's; few-shot: the mean over datasets; transfer:
the mean of the per-target means), its tables, CSV rows and plots -- is done by that protocol's module in
``prompt_learning/protocols/``, looked up in the registry by the name the records carry. Nothing here names
a protocol.

Calibration (results.json ``metrics.<eval set>.ece`` and ``.nll``, recorded since schema version 2) is kept per
group and eval set as mean ± std over the same seeds as the accuracy (``Aggregate.calibration``): a cell one of
whose runs lacks the value (a results.json from before the metrics) is left out, with a warning when some of
them hold it.

For the plots the aggregate also keeps every group's per-seed accuracies (``Aggregate.values``) and the
zero-shot CLIP baseline: the ``zero_shot`` entry of every record (the same task scored by ``method=zeroshot``)
and the metrics of the ``method=zeroshot`` runs themselves, per (protocol, dataset, backbone, shots) and seed
(``Aggregate.zero_shot``; :meth:`Aggregate.zero_shot_stat` pools it).

Library code: no Lightning, no Hydra; matplotlib is imported only inside the protocols' plotting methods.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prompt_learning.protocols.base2new import Base2NewAverage
from prompt_learning.protocols.few_shot import FewShotAverage
from prompt_learning.protocols.tables import Group, Stat, dataset_sort_key, mean, seeds_text
from prompt_learning.protocols.transfer import TransferSummary
from prompt_learning.results.outputs import csv_rows, print_summary, to_csv, to_markdown, write_outputs
from prompt_learning.results.records import (
    AggregationWarning,
    protocol_of,
    protocol_sort_key,
    record_problem,
    warn,
)
from prompt_learning.results.runs import group_key, label_runs, pick_duplicates

__all__ = ["ZERO_SHOT_METHOD", "Aggregate", "AggregationWarning", "Group", "Stat", "aggregate", "csv_rows",
           "print_summary", "to_csv", "to_markdown", "write_outputs"]

ZERO_SHOT_METHOD = "zeroshot"
"""``ZeroShotCLIP.name`` (prompt_learning/methods/zeroshot.py), the baseline every record stores under
``zero_shot``; a literal here so that aggregation does not import the methods (and torch)."""

SeedValues = dict[int, float]  # seed -> top-1 accuracy (%)
CALIBRATION_METRICS = ("ece", "nll")  # results.json metrics.<eval set>.<key>: ECE (%), NLL (nats)


@dataclass
class Aggregate:
    """Every table the outputs are made of: the groups, and each protocol's summaries by its name."""

    groups: list[Group]
    summaries: dict[str, list[Any]] = field(default_factory=dict)  # protocol name -> its summarize_groups()
    warnings: list[str] = field(default_factory=list)
    flagged: set[tuple[str, str, str, str, int]] = field(default_factory=set)  # group keys with odd seed sets
    n_records: int = 0
    values: dict[tuple[str, str, str, str, int], dict[str, SeedValues]] = field(default_factory=dict)
    """group key -> metric -> seed -> accuracy: what each group's :class:`Stat` is computed from."""
    zero_shot: dict[tuple[str, str, str, int], dict[str, dict[int, list[float]]]] = field(default_factory=dict)
    """(protocol, dataset, backbone, shots) -> metric -> seed -> the zero-shot accuracies of that seed's records
    (every method's ``zero_shot`` entry and the ``method=zeroshot`` runs' own metrics)."""
    calibration: dict[tuple[str, str, str, str, int], dict[str, dict[str, Stat]]] = field(default_factory=dict)
    """group key -> eval set -> ``ece`` / ``nll`` -> mean ± std over the seeds of that eval set's accuracy."""

    def calibration_stat(self, key: tuple[str, str, str, str, int], metric: str, name: str) -> Stat | None:
        """ECE or NLL (``name``) of one group's eval set ``metric``; None when not every seed recorded it."""
        return self.calibration.get(key, {}).get(metric, {}).get(name)

    def group(self, protocol: str, dataset: str, method: str, backbone: str, shots: int) -> Group | None:
        return next((g for g in self.groups if g.key == (protocol, dataset, method, backbone, shots)), None)

    def groups_of(self, protocol: str) -> list[Group]:
        return [g for g in self.groups if g.protocol == protocol]

    def seed_values(self, key: tuple[str, str, str, str, int], metric: str) -> SeedValues:
        """The per-seed accuracies of one group's metric (empty when absent)."""
        return dict(self.values.get(key, {}).get(metric, {}))

    @staticmethod
    def is_zero_shot_method(method: str) -> bool:
        """The rows of ``method=zeroshot`` runs: in the plots they are the zero-shot reference, not a method."""
        return method == ZERO_SHOT_METHOD

    def zero_shot_seeds(self, protocol: str, dataset: str, backbone: str, metric: str,
                        shots: int | None = None) -> SeedValues:
        """Zero-shot CLIP's accuracy per seed on one dataset: per seed, the mean over that seed's records (every
        method, and every shots unless ``shots`` is given) of their zero-shot value of ``metric``."""
        pooled: dict[int, list[float]] = defaultdict(list)
        for (p, d, b, k), metrics in self.zero_shot.items():
            if (p, d, b) == (protocol, dataset, backbone) and shots in (None, k):
                for seed, accs in metrics.get(metric, {}).items():
                    pooled[seed] += accs
        return {seed: mean(accs) for seed, accs in sorted(pooled.items())}

    def zero_shot_stat(self, protocol: str, dataset: str, backbone: str, metric: str,
                       shots: int | None = None) -> Stat | None:
        """Mean ± population std over seeds of :meth:`zero_shot_seeds`; None when no record has one."""
        by_seed = self.zero_shot_seeds(protocol, dataset, backbone, metric, shots)
        return Stat.of(by_seed) if by_seed else None

    @property
    def protocols(self) -> list[str]:
        """The protocols present, in table order."""
        return sorted({g.protocol for g in self.groups}, key=protocol_sort_key)

    def summaries_of(self, kind: type) -> list[Any]:
        """Every protocol's summaries of type ``kind``, in table order."""
        return [s for name in self.protocols for s in self.summaries.get(name, []) if isinstance(s, kind)]

    # the built-in protocols' summaries under their former names
    @property
    def base2new_averages(self) -> list[Base2NewAverage]:
        return self.summaries_of(Base2NewAverage)

    @property
    def few_shot_averages(self) -> list[FewShotAverage]:
        return self.summaries_of(FewShotAverage)

    @property
    def transfer(self) -> list[TransferSummary]:
        return self.summaries_of(TransferSummary)


def _group_sort_key(g: Group) -> tuple:
    return protocol_sort_key(g.protocol), g.backbone, g.shots, dataset_sort_key(g.dataset), g.method


def _label(family: tuple[str, str, str, int]) -> str:
    protocol, method, backbone, shots = family
    return f"{protocol} {method} (backbone {backbone}, {shots} shots)"


def seed_values(runs: list[dict[str, Any]]) -> dict[str, SeedValues]:
    """metric -> seed -> accuracy of one group's records."""
    names: dict[str, SeedValues] = {}
    for r in runs:
        for name, value in r["metrics"].items():
            names.setdefault(name, {})[r["seed"]] = float(value["acc"])
    return names


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def calibration_stats(group: Group, runs: list[dict[str, Any]], found: list[str]) -> dict[str, dict[str, Stat]]:
    """eval set -> ``ece`` / ``nll`` -> Stat over the seeds of that eval set's accuracy, for the values every one
    of those runs recorded as a finite number; values only some of them hold are left out with one message."""
    out: dict[str, dict[str, Stat]] = {}
    blank: dict[tuple[int, ...], list[str]] = defaultdict(list)  # seeds lacking values -> the values left blank
    for metric, accuracy in group.metrics.items():
        for name in CALIBRATION_METRICS:
            by_seed = {r["seed"]: float(r["metrics"][metric][name]) for r in runs
                       if metric in r["metrics"] and _finite(r["metrics"][metric].get(name))}
            if by_seed and set(by_seed) == set(accuracy.seeds):
                out.setdefault(metric, {})[name] = Stat.of(by_seed)
            elif by_seed:
                blank[tuple(sorted(set(accuracy.seeds) - set(by_seed)))].append(f"{metric} {name}")
    for lacking, cells in blank.items():
        found.append(f"{_label(group.family)} on {group.dataset}: {', '.join(cells)} left blank, the runs of seeds "
                     f"{seeds_text(lacking)} did not record them (results.json from before the calibration metrics, "
                     f"or a value that is not finite).")
    return out


def build_group(runs: list[dict[str, Any]]) -> Group:
    """One group's seed statistics per metric, then its protocol's own fields."""
    names = seed_values(runs)
    group = Group(*group_key(runs[0]), {name: Stat.of(by_seed) for name, by_seed in names.items()})
    protocol_of(group.protocol).fill_group(group, runs)
    return group


def zero_shot_values(by_group: dict[tuple, list[dict[str, Any]]]
                     ) -> dict[tuple[str, str, str, int], dict[str, dict[int, list[float]]]]:
    """The zero-shot accuracies of the records (``Aggregate.zero_shot``); a ``zero_shot`` entry that is absent
    or malformed, or a value that is not a finite number, is left out."""
    table: dict[tuple[str, str, str, int], dict[str, dict[int, list[float]]]] = {}
    for (protocol, dataset, method, backbone, shots), runs in by_group.items():
        for r in runs:
            if method == ZERO_SHOT_METHOD:  # the baseline itself
                source = r["metrics"]
            else:
                entry = r.get("zero_shot")
                source = entry.get("metrics") if isinstance(entry, dict) else None
            for name, value in (source.items() if isinstance(source, dict) else ()):
                acc = value.get("acc") if isinstance(value, dict) else None
                if isinstance(acc, int | float) and not isinstance(acc, bool) and math.isfinite(acc):
                    metrics = table.setdefault((protocol, dataset, backbone, shots), {})
                    metrics.setdefault(name, {}).setdefault(r["seed"], []).append(float(acc))
    return table


def check_seeds(groups: list[Group], found: list[str]) -> set[tuple]:
    """Warn about groups whose seed set differs from their family's most common one, or within a group."""
    flagged = set()
    families: dict[tuple, list[Group]] = defaultdict(list)
    for g in groups:
        families[g.family].append(g)
        short = [f"{name} {seeds_text(s.seeds)}" for name, s in g.metrics.items() if s.seeds != g.seeds]
        if short:
            flagged.add(g.key)
            found.append(f"{_label(g.family)} on {g.dataset}: metrics evaluated on fewer seeds than the group's "
                         f"{seeds_text(g.seeds)}: {', '.join(short)}.")
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
            found.append(f"{_label(family)} on {g.dataset}: seeds {seeds_text(g.seeds)} (n={len(g.seeds)}), "
                         f"{how} the {seeds_text(reference)} (n={len(reference)}) of {counts[reference]} other "
                         f"dataset(s); its mean is over n={len(g.seeds)} seeds.")
    return flagged


def aggregate(records: Iterable[dict[str, Any]]) -> Aggregate:
    """Seed statistics per group, seed checks, then every present protocol's summaries (module docstring)."""
    found: list[str] = []
    usable = []
    for r in records:
        problem = record_problem(r)
        if problem:
            found.append(f"Skipped {r.get('_path', 'a record') if isinstance(r, dict) else 'a record'}: {problem}.")
        else:
            usable.append(r)
    usable = pick_duplicates(label_runs(usable), found)
    by_group: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in usable:
        by_group[group_key(r)].append(r)
    groups = sorted((build_group(runs) for runs in by_group.values()), key=_group_sort_key)
    agg = Aggregate(groups, n_records=len(usable), values={key: seed_values(runs) for key, runs in by_group.items()},
                    zero_shot=zero_shot_values(by_group))
    agg.calibration = {g.key: stats for g in groups if (stats := calibration_stats(g, by_group[g.key], found))}
    agg.flagged = check_seeds(groups, found)
    for name in agg.protocols:
        agg.summaries[name] = protocol_of(name).summarize_groups(agg.groups_of(name), found)
    for message in found:
        warn(message)
    agg.warnings = found
    return agg
