"""What every protocol starts from (docs/protocols.md): the K-shot train subset and the min(K, 4)-shot val
subset, drawn from the full class list in Dassl's order (and stored in the dataset's few-shot index file,
shared by every method), and class lists in label order."""

from __future__ import annotations

import warnings
from collections import Counter

from prompt_learning.classes import ClassSet
from prompt_learning.data.fewshot import few_shot_train_val
from prompt_learning.data.fewshot_index import cached_few_shot
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.protocols.base import PROTOCOLS


def class_set(splits: DatasetSplits, labels: list[int]) -> ClassSet:
    """The classes ``labels`` of ``splits`` (names in that order), with the dataset's template."""
    return ClassSet(tuple(splits.classnames[i] for i in labels), splits.template, splits.name)


def all_classes(splits: DatasetSplits) -> ClassSet:
    return class_set(splits, list(range(len(splits.classnames))))


def sample_train_val(splits: DatasetSplits, shots: int, seed: int) -> tuple[list[Datum], list[Datum], dict]:
    """K-shot train and min(K, 4)-shot val over all classes, and the dataset info results.json records;
    warns (and records) when classes hold fewer than K images."""
    if not splits.train:
        transfer = " / ".join(name for name, p in PROTOCOLS.items().items() if p.needs_targets)
        raise ConfigurationError(f"Dataset {splits.name!r} has no training split (it is a test-only set); use it as "
                                 f"a target of protocol={transfer}, not as dataset=.")
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
