"""DTD, the Describable Textures Dataset (Cimpoi et al., CVPR 2014): 47 texture classes.

Layout: ``$DATA/dtd/images/<class>/*.jpg`` + ``$DATA/dtd/split_zhou_DescribableTextures.json``.
Without the split file, Dassl's fallback: per class 50% train / 20% val / 30% test (class names =
folder names, sorted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark, split_per_class
from prompt_learning.data.types import DatasetSplits, Datum

DTD = Benchmark(name="dtd", folder="dtd", image_dir="images", template="{} texture.", n_classes=47,
                split_file="split_zhou_DescribableTextures.json", sizes=(2820, 1128, 1692))


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = DTD.directory(cfg)
    if (directory / DTD.split_file).is_file():
        return DTD.from_split_file(cfg)
    images = DTD.images(directory)
    classes = sorted(p.name for p in images.iterdir() if p.is_dir())
    items = [Datum(str(f), label, name) for label, name in enumerate(classes)
             for f in sorted((images / name).iterdir()) if f.is_file()]
    train, val, test = split_per_class(items, 0.5, 0.2, seed=int(cfg.get("split_seed", 0)))
    return DTD.splits(cfg, train, val, test, classes, directory, {"split_file": None, "split": "per-class 50/20/30"})
