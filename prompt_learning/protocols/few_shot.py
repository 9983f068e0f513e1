"""Few-shot learning (docs/protocols.md): train on K shots of every class, validate on min(K, 4) shots,
test on the full test split with all classes (eval set ``all``).

Aggregate: per dataset × shots the seed mean ± population std (ddof=0); the "Average" per method, backbone
and shots is the mean over datasets of the per-dataset seed means. Plots: accuracy against shots, one line
per method, per dataset and for the average.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prompt_learning.data.types import DatasetSplits
from prompt_learning.files import atomic_write_bytes
from prompt_learning.protocols.base import EvalSet, Protocol, Task, register_protocol
from prompt_learning.protocols.sampling import all_classes, sample_train_val
from prompt_learning.protocols.tables import (
    Group,
    check_coverage,
    dataset_sort_key,
    figure_classes,
    md_table,
    mean,
    png_bytes,
    row_seeds,
    safe_filename,
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

    def plot(self, agg: Aggregate, out_dir: Path) -> list[Path]:
        """Accuracy vs shots, one line per method: ``few_shot_<dataset>.png`` and ``few_shot_average.png``."""
        Figure, Canvas = figure_classes()
        groups = agg.groups_of(self.name)
        if not groups:
            return []
        averages: list[FewShotAverage] = agg.summaries.get(self.name, [])
        several = len({g.backbone for g in groups}) > 1
        lines = sorted({(g.method, g.backbone) for g in groups})
        panels: list[tuple[str, dict[tuple[str, str], list[tuple[int, float, float]]]]] = []
        for dataset in sorted({g.dataset for g in groups}, key=dataset_sort_key):
            curves = {k: [(g.shots, g.metrics["all"].mean, g.metrics["all"].std) for g in groups
                          if (g.method, g.backbone, g.dataset) == (*k, dataset)] for k in lines}
            panels.append((dataset, curves))
        panels.append(("average", {k: [(a.shots, a.mean, 0.0) for a in averages if (a.method, a.backbone) == k]
                                   for k in lines}))
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
            ax.set_title("Few-shot, average over datasets" if name == "average" else f"Few-shot, {name}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            path = Path(out_dir) / f"{self.name}_{safe_filename(name)}.png"
            atomic_write_bytes(path, png_bytes(fig, Canvas))
            written.append(path)
        return written

    def summary_lines(self, agg: Aggregate) -> list[str]:
        averages: list[FewShotAverage] = agg.summaries.get(self.name, [])
        return [f"{self.name}  {a.method:<12} {a.backbone} {a.shots}-shot: {a.mean:.2f}  "
                f"(average of {len(a.datasets)} datasets)"
                for a in sorted(averages, key=lambda a: (a.backbone, a.method, a.shots))]


register_protocol(FewShot())
