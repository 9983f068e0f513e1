"""Few-shot learning (docs/protocols.md): train on K shots of every class, validate on min(K, 4) shots,
test on the full test split with all classes (eval set ``all``).

Aggregate: per dataset × shots the seed mean ± population std (ddof=0); the "Average" per method, backbone
and shots is the mean over datasets of the per-dataset seed means. Plots: accuracy against shots, one line
per method with ± std over seeds, zero-shot CLIP as a dashed line, per dataset and for the average.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prompt_learning.data.types import DatasetSplits
from prompt_learning.protocols.base import EvalSet, Protocol, Task, register_protocol
from prompt_learning.protocols.figures import REFERENCE, curve_figure, datasets_text, seed_average
from prompt_learning.protocols.sampling import all_classes, sample_train_val
from prompt_learning.protocols.tables import (
    Group,
    Stat,
    check_coverage,
    dataset_sort_key,
    md_table,
    mean,
    row_seeds,
)

if TYPE_CHECKING:
    from prompt_learning.results.aggregate import Aggregate


@dataclass(frozen=True)
class FewShotAverage:
    """Mean over datasets of the per-dataset seed means, for one shots value."""

    method: str
    backbone: str
    shots: int
    mean: float
    datasets: tuple[str, ...]


class FewShot(Protocol):
    name = "few_shot"
    title = "Few-shot learning"
    order = 1

    def build_task(self, splits: DatasetSplits, shots: int, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> Task:
        self.require_classes(splits)
        train, val, info = sample_train_val(splits, shots, seed)
        classes = all_classes(splits)
        return Task(train, val, classes, [EvalSet("all", list(splits.test), classes)],
                    needs_unseen_classes=self.tests_unseen_classes, dataset_info=info)

    # ------------------------------------------------------------------------------------ aggregation

    def required_metrics(self, record: dict[str, Any]) -> tuple[str, ...]:
        return ("all",)

    def summarize_groups(self, groups: list[Group], found: list[str]) -> list[FewShotAverage]:
        by_row: dict[tuple[str, str, int], list[Group]] = defaultdict(list)
        for g in groups:
            by_row[(g.method, g.backbone, g.shots)].append(g)
        averages = [FewShotAverage(method, backbone, shots, mean([g.metrics["all"].mean for g in members]),
                                   tuple(g.dataset for g in members))
                    for (method, backbone, shots), members in by_row.items()]
        for backbone in sorted({a.backbone for a in averages}):
            check_coverage(f"Few-shot (backbone {backbone})",
                           {(a.method, f"{a.shots}-shot"): a.datasets for a in averages if a.backbone == backbone},
                           found)
        return averages

    def markdown(self, agg: Aggregate, groups: list[Group]) -> list[str]:
        averages: list[FewShotAverage] = agg.summaries.get(self.name, [])
        lines = ["Top-1 accuracy on all classes per dataset and shots; Average = mean over the datasets counted in "
                 "the last column of the per-dataset means.", ""]
        for backbone in sorted({g.backbone for g in groups}):
            cell = [g for g in groups if g.backbone == backbone]
            datasets = sorted({g.dataset for g in cell}, key=dataset_sort_key)
            header = ["method", "shots", "seeds", *datasets, "Average", "Average over"]
            rows = []
            for method, shots in sorted({(g.method, g.shots) for g in cell}):
                row = [method, str(shots), row_seeds(g for g in cell if (g.method, g.shots) == (method, shots))]
                for d in datasets:
                    g = agg.group(self.name, d, method, backbone, shots)
                    row.append("–" if g is None else g.metrics["all"].cell(g.key in agg.flagged))
                avg = next(a for a in averages if (a.method, a.backbone, a.shots) == (method, backbone, shots))
                rows.append([*row, f"{avg.mean:.2f}", f"{len(avg.datasets)} of {len(datasets)} datasets"])
            lines += [f"### Backbone `{backbone}`", "", *md_table(header, rows)]
        return lines

    def figures(self, agg: Aggregate) -> list[tuple[str, Any]]:
        """Accuracy against shots, one line per method (mean ± std over seeds), zero-shot CLIP as a dashed line
        (``method=zeroshot`` runs included there, not as a line): one figure per dataset and ``average`` (the
        mean over datasets, as the table's Average; curves over fewer datasets say so in their label)."""
        groups = agg.groups_of(self.name)
        if not groups:
            return []
        backbones = sorted({g.backbone for g in groups})
        lines = sorted({(g.method, g.backbone) for g in groups if not agg.is_zero_shot_method(g.method)})
        datasets = sorted({g.dataset for g in groups}, key=dataset_sort_key)
        shots = sorted({g.shots for g in groups})  # the zeroshot runs' too, when nothing else is plotted

        def label(what: str, backbone: str, n: set[int] | None = None) -> str:
            text = f"{what} ({backbone})" if len(backbones) > 1 else what
            if n is not None and n != {len(datasets)}:
                text += f" (over {'/'.join(map(str, sorted(n)))} of {len(datasets)} datasets)"
            return text

        figures = []
        for dataset in datasets:
            curves = {label(*k): [(g.shots, g.metrics["all"]) for g in groups
                                  if (g.method, g.backbone, g.dataset) == (*k, dataset) and "all" in g.metrics]
                      for k in lines}
            refs = {label(REFERENCE, b): agg.zero_shot_stat(self.name, dataset, b, "all") for b in backbones}
            figures.append((dataset, curve_figure(f"Few-shot on {dataset}", {k: v for k, v in curves.items() if v},
                                                  {k: v for k, v in refs.items() if v is not None}, xticks=shots)))
        averages: list[FewShotAverage] = agg.summaries.get(self.name, [])
        curves = {}
        for method, backbone in lines:
            mine = [a for a in averages if (a.method, a.backbone) == (method, backbone)]
            points = []
            for a in mine:  # the table's mean; the spread of the per-seed average over its datasets
                spread = seed_average([agg.seed_values((self.name, d, method, backbone, a.shots), "all")
                                       for d in a.datasets])
                points.append((a.shots, Stat(a.mean, spread.std, spread.n, spread.seeds) if spread
                               else Stat(a.mean, 0.0, 0, ())))
            curves[label(method, backbone, {len(a.datasets) for a in mine})] = points
        refs = {}
        for b in backbones:
            per_dataset = [agg.zero_shot_seeds(self.name, d, b, "all") for d in datasets]
            ref = seed_average(per_dataset)
            if ref is not None:
                refs[label(REFERENCE, b, {sum(1 for v in per_dataset if v)})] = ref
        figures.append(("average", curve_figure(f"Few-shot, average over {datasets_text(len(datasets))}", curves,
                                                refs, xticks=shots)))
        return figures

    def summary_lines(self, agg: Aggregate) -> list[str]:
        averages: list[FewShotAverage] = agg.summaries.get(self.name, [])
        return [f"{self.name}  {a.method:<12} {a.backbone} {a.shots}-shot: {a.mean:.2f}  "
                f"(average of {len(a.datasets)} datasets)"
                for a in sorted(averages, key=lambda a: (a.backbone, a.method, a.shots))]


register_protocol(FewShot())
