"""DTD, the Describable Textures Dataset (Cimpoi et al., CVPR 2014): 47 texture classes.

Layout: ``$DATA/dtd/images/<class>/*.jpg`` + ``$DATA/dtd/split_zhou_DescribableTextures.json``.
Without the split file, Dassl's fallback: per class 50% train / 20% val / 30% test (class names =
folder names, sorted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits

DTD = Benchmark(name="dtd", folder="dtd", image_dir="images", template="{} texture.", n_classes=47,
                split_file="split_zhou_DescribableTextures.json", sizes=(2820, 1128, 1692))


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    return DTD.from_split_file_or_class_folders(cfg)

