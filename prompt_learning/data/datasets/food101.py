"""Food-101 (Bossard et al., ECCV 2014): 101 food classes.

Layout: ``$DATA/food-101/images/<class>/*.jpg`` + ``$DATA/food-101/split_zhou_Food101.json``.
Without the split file, Dassl's fallback: per class 50% train / 20% val / 30% test (class names =
folder names, sorted, underscores kept, e.g. ``apple_pie``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits

FOOD101 = Benchmark(name="food101", folder="food-101", image_dir="images", template="a photo of {}, a type of food.",
                    n_classes=101, split_file="split_zhou_Food101.json", sizes=(50500, 20200, 30300))


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    return FOOD101.from_split_file_or_class_folders(cfg)

