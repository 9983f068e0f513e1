"""Base-to-new generalisation (docs/protocols.md).

* base = the first ceil(n/2) labels, new = the rest, each relabelled from 0 (``data.splits.base_new_labels``);
* train and validate on base (K shots per base class); test on base and on new separately, each against its
  own class list (eval sets ``base`` and ``new``);
* one run: HM = 2·B·N / (B + N) of its base and new accuracies (results.json ``hm``);
* aggregate: per dataset, B and N are seed means ± population std (ddof=0) and H = HM(B, N) of those means;
  the "Average" row is B̄ = mean of the per-dataset B, N̄ = mean of the per-dataset N and H̄ = HM(B̄, N̄),
  never the mean of the per-dataset H's. Plots: B̄, N̄ (± std over seeds), H̄ bars per method, zero-shot CLIP
  (the records' ``zero_shot``) as a hatched reference group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prompt_learning.data.splits import base_new_labels, subsample_classes
from prompt_learning.data.types import DatasetSplits
from prompt_learning.protocols.base import EvalSet, Protocol, Task, harmonic_mean, register_protocol
from prompt_learning.protocols.figures import REFERENCE, bar_figure, datasets_text, seed_average
from prompt_learning.protocols.sampling import class_set, sample_train_val
from prompt_learning.protocols.tables import (
    Group,
    Stat,
    check_coverage,
    dataset_sort_key,
    md_table,
    mean,
    row_seeds,
    safe_filename,
)

if TYPE_CHECKING:
    from prompt_learning.results.aggregate import Aggregate


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


class Base2New(Protocol):
    name = "base2new"
    title = "Base-to-new generalisation"
    summary_columns = (("hm", "HM"),)
    order = 0
    tests_unseen_classes = True
    min_classes = 4
    min_classes_reason = ("the first ceil(n/2) classes are base and the rest new, and each half needs 2 or more "
                          "(over one class every prediction is right)")

    def build_task(self, splits: DatasetSplits, shots: int, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> Task:
        self.require_classes(splits)
        train, val, info = sample_train_val(splits, shots, seed)
        base, new = base_new_labels(len(splits.classnames))
        base_classes, new_classes = class_set(splits, base), class_set(splits, new)
        evals = [EvalSet("base", subsample_classes(splits.test, base), base_classes),
                 EvalSet("new", subsample_classes(splits.test, new), new_classes)]
        return Task(subsample_classes(train, base), subsample_classes(val, base), base_classes, evals,
                    needs_unseen_classes=self.tests_unseen_classes, dataset_info=info)

    def summarize(self, accuracies: dict[str, float], task: Task) -> dict[str, Any]:
        out = super().summarize(accuracies, task)
        if "base" in accuracies and "new" in accuracies:
            out["hm"] = harmonic_mean(accuracies["base"], accuracies["new"])
        return out

    # ------------------------------------------------------------------------------------ aggregation

    def required_metrics(self, record: dict[str, Any]) -> tuple[str, ...]:
        return ("base", "new")

    def fill_group(self, group: Group, runs: list[dict[str, Any]]) -> None:
        group.hm = harmonic_mean(group.metrics["base"].mean, group.metrics["new"].mean)  # HM of the seed means

    def summarize_groups(self, groups: list[Group], found: list[str]) -> list[Base2NewAverage]:
        by_row: dict[tuple[str, str, int], list[Group]] = defaultdict(list)
        for g in groups:
            by_row[(g.method, g.backbone, g.shots)].append(g)
        averages = []
        for (method, backbone, shots), members in by_row.items():
            base = mean([g.metrics["base"].mean for g in members])
            new = mean([g.metrics["new"].mean for g in members])
            averages.append(Base2NewAverage(method, backbone, shots, base, new, harmonic_mean(base, new),
                                            tuple(g.dataset for g in members)))
        for backbone, shots in sorted({(a.backbone, a.shots) for a in averages}):
            check_coverage(f"Base-to-new (backbone {backbone}, {shots} shots)",
                           {(a.method,): a.datasets for a in averages if (a.backbone, a.shots) == (backbone, shots)},
                           found)
        return averages

    def markdown(self, agg: Aggregate, groups: list[Group]) -> list[str]:
        averages: list[Base2NewAverage] = agg.summaries.get(self.name, [])
        lines = ["HM per dataset = 2·B·N/(B+N) of the seed-averaged B and N. Average: B̄ and N̄ are the means of "
                 "the per-dataset B and N over the datasets listed in its last column, and H̄ = HM(B̄, N̄) "
                 "(the harmonic mean of the averages, not the mean of the per-dataset H).", ""]
        for backbone, shots in sorted({(g.backbone, g.shots) for g in groups}):
            cell = [g for g in groups if (g.backbone, g.shots) == (backbone, shots)]
            datasets = sorted({g.dataset for g in cell}, key=dataset_sort_key)
            header = ["method", "seeds"] + [f"{d} {m}" for d in datasets for m in ("B", "N", "H")]
            header += ["Avg B", "Avg N", "Avg H", "Average over"]
            rows = []
            for method in sorted({g.method for g in cell}):
                row = [method, row_seeds(g for g in cell if g.method == method)]
                for d in datasets:
                    g = agg.group(self.name, d, method, backbone, shots)
                    flag = g is not None and g.key in agg.flagged
                    row += (["–"] * 3 if g is None or g.hm is None else
                            [g.metrics["base"].cell(flag), g.metrics["new"].cell(flag), f"{g.hm:.2f}"])
                avg = next(a for a in averages if (a.method, a.backbone, a.shots) == (method, backbone, shots))
                row += [f"{avg.base:.2f}", f"{avg.new:.2f}", f"{avg.hm:.2f}",
                        f"{len(avg.datasets)} of {len(datasets)} datasets"]
                rows.append(row)
            lines += [f"### Backbone `{backbone}`, {shots} shots", "", *md_table(header, rows)]
        return lines

    def csv_rows(self, group: Group) -> list[dict[str, Any]]:
        """Metric ``hm``: the HM of the seed-averaged base and new, with an empty std (not a per-seed statistic)."""
        if group.hm is None:
            return []
        seeds = sorted(set(group.metrics["base"].seeds) & set(group.metrics["new"].seeds))
        return [{"metric": "hm", "mean": round(group.hm, 6), "std": "", "n": len(seeds),
                 "seeds": ";".join(map(str, seeds))}]

    def figures(self, agg: Aggregate) -> list[tuple[str, Any]]:
        """Average base / new / HM bars per method, one ``<backbone>_shots<K>`` figure per backbone × shots:
        B̄ and N̄ with ± std over seeds (of the per-seed average over datasets), H̄ = HM(B̄, N̄) without a bar
        (not a per-seed statistic); zero-shot CLIP's B̄, N̄, H̄ from the same records as a hatched first group."""
        averages: list[Base2NewAverage] = agg.summaries.get(self.name, [])
        figures = []
        for backbone, shots in sorted({(a.backbone, a.shots) for a in averages}):
            key = (backbone, shots)
            datasets = sorted({g.dataset for g in agg.groups_of(self.name) if (g.backbone, g.shots) == key},
                              key=dataset_sort_key)
            n = len(datasets)
            bars: list[tuple[str, dict[str, Stat | float | None]]] = []
            zero_shot = {m: [agg.zero_shot_seeds(self.name, d, backbone, m, shots) for d in datasets]
                         for m in ("base", "new")}
            zs_base, zs_new = seed_average(zero_shot["base"]), seed_average(zero_shot["new"])
            if zs_base is not None and zs_new is not None:
                covered = sum(1 for b, nw in zip(*zero_shot.values(), strict=True) if b and nw)
                bars.append((REFERENCE + ("" if covered == n else f"\n({covered} of {n} datasets)"),
                             {"Base": zs_base, "New": zs_new, "HM": harmonic_mean(zs_base.mean, zs_new.mean)}))
            reference = bars[0][0] if bars else None
            for a in sorted((a for a in averages if (a.backbone, a.shots) == key), key=lambda a: a.method):
                if agg.is_zero_shot_method(a.method):  # already in the zero-shot group
                    continue
                spread = {m: seed_average([agg.seed_values((self.name, d, a.method, backbone, shots), m)
                                           for d in a.datasets]) for m in ("base", "new")}
                bars.append((a.method + ("" if len(a.datasets) == n else f"\n({len(a.datasets)} of {n} datasets)"),
                             {"Base": spread["base"] or a.base, "New": spread["new"] or a.new, "HM": a.hm}))
            where = f"on {datasets[0]}" if n == 1 else f"average over {datasets_text(n)}"
            figures.append((f"{safe_filename(backbone)}_shots{shots}",
                            bar_figure(f"Base-to-new {where} ({backbone}, {shots} shots)", bars, ("Base", "New", "HM"),
                                       reference, notes=["Bars: mean ± std over seeds; HM = HM(base, new) of the means "
                                                         "(no seed spread)."])))
        return figures

    def summary_lines(self, agg: Aggregate) -> list[str]:
        averages: list[Base2NewAverage] = agg.summaries.get(self.name, [])
        return [f"{self.name}  {a.method:<12} {a.backbone} {a.shots}-shot: B {a.base:.2f}  N {a.new:.2f}  "
                f"H {a.hm:.2f}  (average of {len(a.datasets)} datasets)"
                for a in sorted(averages, key=lambda a: (a.backbone, a.shots, a.method))]


register_protocol(Base2New())
