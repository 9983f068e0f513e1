"""Protocols (methods.md §4.3, §4.4): ``few_shot``, ``base2new``, ``cross_dataset``, ``domain_gen``.

All first draw the K-shot train subset and the min(K, 4)-shot val subset from the full class list
(Dassl's order), then:

* ``few_shot`` -- train, validate and test on all classes;
* ``base2new`` -- base = first ceil(n/2) labels, new = the rest, each relabelled from 0. Train and
  validate on base; test on base and on new separately, each against its own class list;
  HM = 2 * base * new / (base + new);
* ``cross_dataset`` / ``domain_gen`` -- train on all classes of the source, then test the same learned
  prompts on the source's test split and on each target's full test split with the target's own
  class names and template (ImageNet-A/-R: their 200 classes). One run covers every target.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prompt_learning.classes import ClassSet
from prompt_learning.data.fewshot import few_shot_train_val
from prompt_learning.data.fewshot_index import cached_few_shot
from prompt_learning.data.splits import base_new_labels, subsample_classes
from prompt_learning.data.types import DatasetSplits, Datum, ImageLoader
from prompt_learning.errors import ConfigurationError


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
    targets: list[str] = field(default_factory=list)  # cross-dataset / DG target datasets


def _classes(splits: DatasetSplits, labels: list[int]) -> ClassSet:
    return ClassSet(tuple(splits.classnames[i] for i in labels), splits.template, splits.name)


def _sample(splits: DatasetSplits, shots: int, seed: int) -> tuple[list[Datum], list[Datum], dict]:
    """K-shot train and min(K, 4)-shot val; warns (and records) when classes hold fewer than K images."""
    if not splits.train:
        raise ConfigurationError(f"Dataset {splits.name!r} has no training split (it is a test-only set); use it as "
                                 f"a target of protocol=cross_dataset / domain_gen, not as dataset=.")
    index: dict = {}
    if splits.base_dir is not None and shots > 0:
        train, val, index = cached_few_shot(splits.base_dir, shots, seed, splits.train, splits.val,
                                            lambda: few_shot_train_val(splits.train, splits.val, shots, seed))
    else:
        train, val = few_shot_train_val(splits.train, splits.val, shots, seed)
    counts = Counter(d.label for d in train)
    fewest = min(counts.values(), default=0)
    if shots > 0 and fewest < shots:
        short = sum(1 for c in counts.values() if c < shots)
        warnings.warn(f"{short} of {len(counts)} classes have fewer than {shots} training images and use all they "
                      f"have (fewest: {fewest}); results.json records this as fewest_train_images_per_class.",
                      stacklevel=3)
    return train, val, {**splits.info, **index, "fewest_train_images_per_class": fewest}


def few_shot(splits: DatasetSplits, shots: int, seed: int) -> Task:
    train, val, info = _sample(splits, shots, seed)
    classes = _classes(splits, list(range(len(splits.classnames))))
    return Task(train, val, classes, [EvalSet("all", list(splits.test), classes)], needs_unseen_classes=False,
                dataset_info=info)


def base2new(splits: DatasetSplits, shots: int, seed: int) -> Task:
    train, val, info = _sample(splits, shots, seed)
    base, new = base_new_labels(len(splits.classnames))
    base_classes, new_classes = _classes(splits, base), _classes(splits, new)
    evals = [EvalSet("base", subsample_classes(splits.test, base), base_classes),
             EvalSet("new", subsample_classes(splits.test, new), new_classes)]
    return Task(subsample_classes(train, base), subsample_classes(val, base), base_classes, evals,
                needs_unseen_classes=True, dataset_info=info)


def cross_dataset(splits: DatasetSplits, shots: int, seed: int, targets: Sequence[DatasetSplits] = ()) -> Task:
    if not targets:
        raise ConfigurationError("protocol=cross_dataset / domain_gen needs target datasets: protocol.targets=[...].")
    task = few_shot(splits, shots, seed)
    source = EvalSet(splits.name, list(splits.test), task.train_classes)
    evals = [source] + [EvalSet(t.name, list(t.test), _classes(t, list(range(len(t.classnames)))), t.load_image)
                        for t in targets]
    names = [e.name for e in evals]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"protocol.targets repeats a dataset or names the source: {names}.")
    return Task(task.train, task.val, task.train_classes, evals, needs_unseen_classes=True,
                dataset_info=task.dataset_info, targets=[t.name for t in targets])


Protocol = Callable[..., Task]
PROTOCOLS: dict[str, Protocol] = {"base2new": base2new, "few_shot": few_shot, "cross_dataset": cross_dataset,
                                  "domain_gen": cross_dataset}
TRANSFER_PROTOCOLS = ("cross_dataset", "domain_gen")


def build_task(protocol: str, splits: DatasetSplits, shots: int, seed: int,
               targets: Sequence[DatasetSplits] = ()) -> Task:
    if protocol not in PROTOCOLS:
        close = difflib.get_close_matches(protocol, PROTOCOLS, n=2)
        raise ConfigurationError(f"Unknown protocol {protocol!r}. Did you mean {close}? Available: {sorted(PROTOCOLS)}.")
    if protocol in TRANSFER_PROTOCOLS:
        return cross_dataset(splits, shots, seed, targets)
    return PROTOCOLS[protocol](splits, shots, seed)


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * B * N / (B + N), 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0
