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

Library code: no Lightning, no Hydra; matplotlib is imported only inside the protocols' plotting methods.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prompt_learning.protocols.base2new import Base2NewAverage
from prompt_learning.protocols.few_shot import FewShotAverage
from prompt_learning.protocols.tables import Group, Stat, dataset_sort_key, seeds_text
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

__all__ = ["Aggregate", "AggregationWarning", "Group", "Stat", "aggregate", "csv_rows", "print_summary", "to_csv",
           "to_markdown", "write_outputs"]


@dataclass
class Aggregate:
    """Every table the outputs are made of: the groups, and each protocol's summaries by its name."""

    groups: list[Group]
    summaries: dict[str, list[Any]] = field(default_factory=dict)  # protocol name -> its summarize_groups()
    warnings: list[str] = field(default_factory=list)
    flagged: set[tuple[str, str, str, str, int]] = field(default_factory=set)  # group keys with odd seed sets
    n_records: int = 0

    def group(self, protocol: str, dataset: str, method: str, backbone: str, shots: int) -> Group | None:
        return next((g for g in self.groups if g.key == (protocol, dataset, method, backbone, shots)), None)

    def groups_of(self, protocol: str) -> list[Group]:
        return [g for g in self.groups if g.protocol == protocol]

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


def build_group(runs: list[dict[str, Any]]) -> Group:
    """One group's seed statistics per metric, then its protocol's own fields."""
    names: dict[str, dict[int, float]] = {}
    for r in runs:
        for name, value in r["metrics"].items():
            names.setdefault(name, {})[r["seed"]] = float(value["acc"])
    group = Group(*group_key(runs[0]), {name: Stat.of(by_seed) for name, by_seed in names.items()})
    protocol_of(group.protocol).fill_group(group, runs)
    return group


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
    agg = Aggregate(groups, n_records=len(usable))
    agg.flagged = check_seeds(groups, found)
    for name in agg.protocols:
        agg.summaries[name] = protocol_of(name).summarize_groups(agg.groups_of(name), found)
    for message in found:
        warn(message)
    agg.warnings = found
    return agg
