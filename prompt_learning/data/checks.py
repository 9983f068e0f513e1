"""Data checks before long work: build the dataset (which verifies the layout, the split file and that
every referenced image exists, each failure naming the path and the fix), then compare it with what
the benchmark should hold and with what the protocol will ask of it."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prompt_learning.data.datasets import DATASETS, LazyBuilder, build_dataset
from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits


@dataclass
class DataReport:
    splits: DatasetSplits
    problems: list[str] = field(default_factory=list)  # would make a run fail or mislead
    notes: list[str] = field(default_factory=list)  # differences from the published dataset

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        s = self.splits
        out = [f"{s.name}: {len(s.classnames)} classes; train {len(s.train)}, val {len(s.val)}, test {len(s.test)} "
               f"images; template {s.template!r}"]
        out += [f"  note: {n}" for n in self.notes] + [f"  PROBLEM: {p}" for p in self.problems]
        out.append("  OK" if self.ok else f"  {len(self.problems)} problem(s)")
        return out


def benchmark_of(name: str) -> Benchmark | None:
    """The published layout of a benchmark dataset (None for folder / csv / synthetic)."""
    entry = DATASETS.items().get(name)
    if not isinstance(entry, LazyBuilder):
        return None
    module = importlib.import_module(f"prompt_learning.data.datasets.{entry.module}")
    found = [v for v in vars(module).values() if isinstance(v, Benchmark) and v.name == name]
    return found[0] if found else None


def check_dataset(cfg: Mapping[str, Any], shots: int = 16) -> DataReport:
    """Build the dataset described by ``cfg`` (layout errors raise ``DataError``) and report on it."""
    return report_on(build_dataset(cfg), shots)


def report_on(splits: DatasetSplits, shots: int = 16) -> DataReport:
    """Differences from the benchmark's published table, classes with fewer than ``shots`` training
    images, and problems that would make a run fail or mislead."""
    report = DataReport(splits)
    spec = benchmark_of(splits.name)
    if spec is not None:
        if len(splits.classnames) != spec.n_classes:
            report.notes.append(f"{len(splits.classnames)} classes, the published dataset has {spec.n_classes}")
        if spec.sizes is not None:
            got = (len(splits.train), len(splits.val), len(splits.test))
            for split, n, expected in zip(("train", "val", "test"), got, spec.sizes, strict=True):
                if expected and n != expected:
                    report.notes.append(f"{split}: {n} images, the published split has {expected}")
    counts = Counter(d.label for d in splits.train)
    if splits.train:
        absent = [splits.classnames[i] for i in range(len(splits.classnames)) if counts[i] == 0]
        if absent:
            report.problems.append(f"{len(absent)} classes have no training image, e.g. {absent[:3]}")
        short = [splits.classnames[i] for i, c in sorted(counts.items()) if c < shots]
        if short:
            report.notes.append(f"{len(short)} classes have fewer than {shots} training images (they use all they "
                                f"have), e.g. {short[:3]}")
    test_labels = {d.label for d in splits.test}
    if not splits.test:
        report.problems.append("the test split is empty")
    elif len(test_labels) < len(splits.classnames):
        report.notes.append(f"{len(splits.classnames) - len(test_labels)} classes have no test image")
    return report
