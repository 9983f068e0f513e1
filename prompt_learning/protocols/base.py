"""The protocol interface, its registry and the task it builds (definitions: docs/protocols.md).

A protocol turns a dataset's splits into a :class:`Task` (what to train on, what to test on), summarises one
run's accuracies for ``results.json``, and owns its part of the results aggregate: which metrics a record
must hold, its averages, its Markdown section, extra CSV rows, plots and summary lines. Every hook but
:meth:`Protocol.build_task` has a default, so a new protocol is one module in ``prompt_learning/protocols/``
that registers an instance (``register_protocol(MyProtocol())``) plus ``configs/protocol/<name>.yaml``;
code outside the package registers its own the same way (``plugins=[my_package.my_protocol]``).

Shared definitions: HM = 2·B·N / (B + N) (:func:`harmonic_mean`), 0 when both are 0.

Library code: no Lightning, no Hydra, no matplotlib at import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from prompt_learning.classes import ClassSet
from prompt_learning.data.types import DatasetSplits, Datum, ImageLoader
from prompt_learning.errors import ConfigurationError
from prompt_learning.protocols.figures import save_figures
from prompt_learning.protocols.tables import Group, md_table, seeds_text
from prompt_learning.registry import Registry

if TYPE_CHECKING:  # the aggregate is built by prompt_learning.results, which imports this module
    from prompt_learning.results.aggregate import Aggregate


@dataclass
class EvalSet:
    name: str  # "base", "new", "all", or a dataset name for cross-dataset targets
    items: list[Datum]
    classes: ClassSet
    load_image: ImageLoader | None = None  # None: the source dataset's loader


@dataclass
class Task:
    train: list[Datum]
    val: list[Datum]
    train_classes: ClassSet
    evals: list[EvalSet]
    needs_unseen_classes: bool  # True when an eval set holds classes absent from training
    dataset_info: dict = field(default_factory=dict)  # where the data came from (root, render seed, split file)
    targets: list[str] = field(default_factory=list)  # transfer protocols: the target datasets
    # How the training set uses labels (protocols/unlabeled.py): {"labels": bool, "transductive": bool, ...}
    training_data: dict = field(default_factory=lambda: {"labels": True, "transductive": False})
    # image ref -> true class name of an unlabeled training set: held back from the method; the engine scores the
    # labels a method gives those images (UPL's pseudo-labels) against it, for the report only
    ground_truth: dict[str, str] = field(default_factory=dict, repr=False)


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * B * N / (B + N), 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


class Protocol(ABC):
    """One evaluation protocol. Subclasses set the class attributes and implement :meth:`build_task`; the
    other hooks default to "no extra fields, no summaries, the generic table"."""

    name: ClassVar[str]  # the config's protocol.name and results.json's "protocol"
    title: ClassVar[str]  # the section title in aggregate.md
    order: ClassVar[int] = 100  # sections of aggregate.md are sorted by (order, name)
    tests_unseen_classes: ClassVar[bool] = False  # an eval set holds classes absent from training
    needs_targets: ClassVar[bool] = False  # the config's protocol.targets name datasets to build and test on
    summary_columns: ClassVar[tuple[tuple[str, str], ...]] = ()  # (results.json key, column title) of summarize
    min_classes: ClassVar[int] = 2  # a task over fewer classes is refused by require_classes
    min_classes_reason: ClassVar[str] = "a classifier over one class is right whatever it learned"

    # ----------------------------------------------------------------------------------------- one run

    @abstractmethod
    def build_task(self, splits: DatasetSplits, shots: int, seed: int,
                   targets: Sequence[DatasetSplits] = ()) -> Task:
        """The training subset and eval sets of one run (``targets``: built only when ``needs_targets``)."""

    def require_classes(self, splits: DatasetSplits, role: str = "Dataset") -> None:
        """Refuse a dataset with fewer classes than the task needs (``min_classes``), naming it and its
        classes; :meth:`build_task` calls it for the source and for each target."""
        n = len(splits.classnames)
        if n >= self.min_classes:
            return
        names = ", ".join(map(repr, splits.classnames[:5])) + (", ..." if n > 5 else "")
        raise ConfigurationError(f"{role} {splits.name!r} has {n} class{'' if n == 1 else 'es'} ({names}); "
                                 f"protocol={self.name} needs at least {self.min_classes}: {self.min_classes_reason}. "
                                 f"Give the dataset more classes (one folder or label per class), or choose "
                                 f"another dataset.")

    def summarize(self, accuracies: dict[str, float], task: Task) -> dict[str, Any]:
        """What results.json records of one evaluation: ``{"metrics": {eval name: {"acc": %}}}`` plus the
        protocol's summary keys (e.g. ``hm``, ``target_mean``)."""
        return {"metrics": {name: {"acc": acc} for name, acc in accuracies.items()}}

    def record_fields(self, task: Task, dataset_name: str) -> dict[str, Any]:
        """Extra top-level fields of results.json (e.g. the source and targets of a transfer run)."""
        return {}

    # ------------------------------------------------------------------------------------ aggregation

    def required_metrics(self, record: dict[str, Any]) -> tuple[str, ...]:
        """Eval sets a results record must hold to be aggregated."""
        return ()

    def record_problem(self, record: dict[str, Any]) -> str | None:
        """Why a record (already checked for the common fields) cannot be aggregated, or None."""
        absent = [n for n in self.required_metrics(record) if n not in record["metrics"]]
        if absent:
            return f"{self.name} result without metric(s) {', '.join(map(str, absent))}"
        return None

    def fill_group(self, group: Group, runs: list[dict[str, Any]]) -> None:
        """Set the protocol's own fields of ``group`` (built from ``runs``, its records over seeds); none here."""
        return None

    def summarize_groups(self, groups: list[Group], found: list[str]) -> list[Any]:
        """The protocol's summaries of its groups (``agg.summaries[name]``); messages about them go to
        ``found`` (they become warnings)."""
        return []

    def markdown(self, agg: Aggregate, groups: list[Group]) -> list[str]:
        """The lines of the protocol's section of aggregate.md (after its title): by default one row per group."""
        rows = [[g.method, g.dataset, g.backbone, str(g.shots), seeds_text(g.seeds),
                 ", ".join(f"{n} {s.cell(g.key in agg.flagged)}" for n, s in g.metrics.items())] for g in groups]
        return md_table(["method", "dataset", "backbone", "shots", "seeds", "metrics"], rows)

    def csv_rows(self, group: Group) -> list[dict[str, Any]]:
        """Rows of aggregate.csv beyond one per metric: ``metric``, ``mean``, ``std``, ``n``, ``seeds``."""
        return []

    def figures(self, agg: Aggregate) -> list[tuple[str, Any]]:
        """The protocol's figures as ``(name, matplotlib Figure)`` (helpers and conventions:
        ``prompt_learning.protocols.figures``; matplotlib imported inside); none here."""
        return []

    def plot(self, agg: Aggregate, out_dir: Path) -> list[Path]:
        """Write :meth:`figures` into ``out_dir`` as ``<name>_<figure name>.png``; return their paths."""
        return save_figures(self.name, self.figures(agg), out_dir)

    def summary_lines(self, agg: Aggregate) -> list[str]:
        """The lines ``print_summary`` prints for this protocol (the averages the papers report)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


PROTOCOLS: Registry[Protocol] = Registry("protocol", builtins=["prompt_learning.protocols.*"])
"""Every protocol by name; the built-ins register on first look-up, plugins when imported."""

register_protocol = PROTOCOLS.register


def get_protocol(name: str) -> Protocol:
    """The protocol registered as ``name``, or a :class:`ConfigurationError` with close matches."""
    return PROTOCOLS.get(name)


def build_task(protocol: str, splits: DatasetSplits, shots: int, seed: int,
               targets: Sequence[DatasetSplits] = ()) -> Task:
    """``get_protocol(protocol).build_task(splits, shots, seed, targets)``."""
    return get_protocol(protocol).build_task(splits, shots, seed, targets)
