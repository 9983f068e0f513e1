"""Oxford Flowers 102 (Nilsback & Zisserman, ICVGIP 2008): 102 flower species.

Layout: ``$DATA/oxford_flowers/jpg/*.jpg`` + ``$DATA/oxford_flowers/split_zhou_OxfordFlowers.json`` (class names
as stored there, from ``cat_to_name.json``). The split file is required: Dassl's fallback reads
``imagelabels.mat``, which needs scipy, not a dependency here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits

OXFORD_FLOWERS = Benchmark(name="oxford_flowers", folder="oxford_flowers", image_dir="jpg",
                           template="a photo of a {}, a type of flower.", n_classes=102,
                           split_file="split_zhou_OxfordFlowers.json", sizes=(4093, 1633, 2463))


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    return OXFORD_FLOWERS.from_required_split_file(cfg, "imagelabels.mat")

