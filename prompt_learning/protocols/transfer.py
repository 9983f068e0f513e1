"""Cross-dataset transfer and domain generalisation (docs/protocols.md): one task, two protocols.

* train on all classes of the source (``dataset=``, K shots, as few-shot learning), then test the same learned
  prompts on the source's test split and on each target's full test split (``protocol.targets``) with the
  target's own class names and template (ImageNet-A/-R: their 200 classes). One run covers every target;
* one run: ``target_mean`` = arithmetic mean of the target accuracies; results.json also records
  ``source`` and ``targets``;
* aggregate: per target the seed mean ± population std (ddof=0), the source accuracy separately, and the
  arithmetic mean of the per-target means (over the targets the run evaluated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import ConfigurationError
from prompt_learning.protocols.base import EvalSet, Protocol, Task, register_protocol
from prompt_learning.protocols.sampling import all_classes, sample_train_val
from prompt_learning.protocols.tables import Group, Stat, dataset_sort_key, md_table, mean, seeds_text

if TYPE_CHECKING:
    from prompt_learning.results.aggregate import Aggregate


@dataclass(frozen=True)
class TransferSummary:
    """One transfer group: source accuracy, per-target stats and the mean of the per-target means."""

    protocol: str
    dataset: str
    method: str
    backbone: str
    shots: int
    source: str
    source_acc: Stat
    targets: dict[str, Stat]
    average: float | None  # None when no target was evaluated


class Transfer(Protocol):
    """Train on the source, test on the source and every target; subclasses only name it."""

    tests_unseen_classes = True
    needs_targets = True
    summary_columns = (("target_mean", "target mean"),)

    def build_task(self, splits: DatasetSplits, shots: int, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> Task:
        if not targets:
            raise ConfigurationError(f"protocol={self.name} needs target datasets: protocol.targets=[...].")
        self.require_classes(splits)
        for target in targets:
            self.require_classes(target, "Target dataset")
        train, val, info = sample_train_val(splits, shots, seed)  # as few-shot learning
        classes = all_classes(splits)
        source = EvalSet(splits.name, list(splits.test), classes)
        evals = [source] + [EvalSet(t.name, list(t.test), all_classes(t), t.load_image) for t in targets]
        names = [e.name for e in evals]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"protocol.targets repeats a dataset or names the source: {names}.")
        return Task(train, val, classes, evals, needs_unseen_classes=self.tests_unseen_classes, dataset_info=info,
                    targets=[t.name for t in targets])

    def summarize(self, accuracies: dict[str, float], task: Task) -> dict[str, Any]:
        out = super().summarize(accuracies, task)
        if task.targets:  # the papers' average column
            out["target_mean"] = sum(accuracies[t] for t in task.targets) / len(task.targets)
        return out

    def record_fields(self, task: Task, dataset_name: str) -> dict[str, Any]:
        return {"source": dataset_name, "targets": list(task.targets)} if task.targets else {}

    # ------------------------------------------------------------------------------------ aggregation

    def required_metrics(self, record: dict[str, Any]) -> tuple[str, ...]:
        return (record.get("source", record["dataset"]),)

    def record_problem(self, record: dict[str, Any]) -> str | None:
        if not isinstance(record.get("source", record["dataset"]), str):
            return "source is not a string"
        targets = record.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            return "targets is not a list of dataset names"
        return super().record_problem(record)

    def fill_group(self, group: Group, runs: list[dict[str, Any]]) -> None:
        """Source from the records (default: the dataset); targets as listed, else every other metric."""
        group.source = str(runs[0].get("source", group.dataset))
        listed = [t for r in runs for t in r.get("targets") or [n for n in r["metrics"] if n != group.source]]
        group.targets = tuple(dict.fromkeys(t for t in listed if t in group.metrics and t != group.source))

    def summarize_groups(self, groups: list[Group], found: list[str]) -> list[TransferSummary]:
        summaries = []
        for g in groups:
            targets = {t: g.metrics[t] for t in g.targets}
            average = mean([s.mean for s in targets.values()]) if targets else None
            summaries.append(TransferSummary(g.protocol, g.dataset, g.method, g.backbone, g.shots, str(g.source),
                                             g.metrics[str(g.source)], targets, average))
        return summaries

    def markdown(self, agg: Aggregate, groups: list[Group]) -> list[str]:
        summaries: list[TransferSummary] = agg.summaries.get(self.name, [])
        lines = ["Source accuracy shown separately; Average = arithmetic mean of the per-target means over the "
                 "targets counted in the last column.", ""]
        for dataset, backbone, shots in sorted({(t.dataset, t.backbone, t.shots) for t in summaries}):
            cell = [t for t in summaries if (t.dataset, t.backbone, t.shots) == (dataset, backbone, shots)]
            sources = sorted({t.source for t in cell})
            targets = sorted({n for t in cell for n in t.targets}, key=dataset_sort_key)
            header = ["method", "seeds", f"{'/'.join(sources)} (source)", *targets, "Average", "Average over"]
            rows = []
            for t in sorted(cell, key=lambda t: t.method):
                g = agg.group(self.name, dataset, t.method, backbone, shots)
                flag = g is not None and g.key in agg.flagged
                row = [t.method, seeds_text(g.seeds) if g else "", t.source_acc.cell(flag)]
                row += [t.targets[n].cell(flag) if n in t.targets else "–" for n in targets]
                row += ["–" if t.average is None else f"{t.average:.2f}", f"{len(t.targets)} of {len(targets)} targets"]
                rows.append(row)
            lines += [f"### Trained on `{dataset}`, backbone `{backbone}`, {shots} shots", "",
                      *md_table(header, rows)]
        return lines

    def summary_lines(self, agg: Aggregate) -> list[str]:
        summaries: list[TransferSummary] = agg.summaries.get(self.name, [])
        lines = []
        for t in sorted(summaries, key=lambda t: (t.backbone, t.shots, t.method)):
            avg = "–" if t.average is None else f"{t.average:.2f}"
            lines.append(f"{t.protocol:<9} {t.method:<12} {t.backbone} {t.shots}-shot: source {t.source} "
                         f"{t.source_acc.mean:.2f}, targets {avg}  (average of {len(t.targets)} targets)")
        return lines


class CrossDataset(Transfer):
    name = "cross_dataset"
    title = "Cross-dataset transfer"
    order = 2


class DomainGeneralisation(Transfer):
    """Source ImageNet, targets its variants (ImageNet-V2, -Sketch, -A, -R): the same task as cross-dataset."""

    name = "domain_gen"
    title = "Domain generalisation"
    order = 3


register_protocol(CrossDataset())
register_protocol(DomainGeneralisation())
