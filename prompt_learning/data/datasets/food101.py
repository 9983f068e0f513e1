"""Food-101 (Bossard et al., ECCV 2014): 101 food classes.

Layout: ``$DATA/food-101/images/<class>/*.jpg`` + ``$DATA/food-101/split_zhou_Food101.json``.
Without the split file, Dassl's fallback: per class 50% train / 20% val / 30% test (class names =
folder names, sorted, underscores kept, e.g. ``apple_pie``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark, split_per_class
from prompt_learning.data.types import DatasetSplits, Datum

FOOD101 = Benchmark(name="food101", folder="food-101", image_dir="images", template="a photo of {}, a type of food.",
                    n_classes=101, split_file="split_zhou_Food101.json", sizes=(50500, 20200, 30300))


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = FOOD101.directory(cfg)
    if (directory / FOOD101.split_file).is_file():
        return FOOD101.from_split_file(cfg)
    images = FOOD101.images(directory)
    classes = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    items = [Datum(str(f), label, name) for label, name in enumerate(classes)
             for f in sorted((images / name).iterdir()) if f.is_file() and not f.name.startswith(".")]
    train, val, test = split_per_class(items, 0.5, 0.2, seed=int(cfg.get("split_seed", 0)))
    return FOOD101.splits(cfg, train, val, test, classes, directory, {"split_file": None, "split": "per-class 50/20/30"})
