"""Caltech101 (Fei-Fei et al., 2004): 100 object classes (``BACKGROUND_Google`` and ``Faces_easy`` dropped).

Layout: ``$DATA/caltech-101/101_ObjectCategories/<class>/*.jpg`` + ``$DATA/caltech-101/split_zhou_Caltech101.json``.
Without the split file, Dassl's fallback: class folders in Python sorted order (capitals first), the two
ignored folders dropped, four renames (``airplanes``→``airplane``, ``Faces``→``face``, ``Leopards``→``leopard``,
``Motorbikes``→``motorbike``), per class 50% train / 20% val / 30% test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark, split_per_class
from prompt_learning.data.types import DatasetSplits, Datum

CALTECH101 = Benchmark(name="caltech101", folder="caltech-101", image_dir="101_ObjectCategories",
                       template="a photo of a {}.", n_classes=100, split_file="split_zhou_Caltech101.json",
                       sizes=(4128, 1649, 2465))
IGNORED = ("BACKGROUND_Google", "Faces_easy")
RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = CALTECH101.directory(cfg)
    if (directory / CALTECH101.split_file).is_file():
        return CALTECH101.from_split_file(cfg)
    images = CALTECH101.images(directory)
    folders = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in IGNORED)
    classes = [RENAMES.get(f, f) for f in folders]
    items = [Datum(str(f), label, classes[label]) for label, folder in enumerate(folders)
             for f in sorted((images / folder).iterdir()) if f.is_file() and not f.name.startswith(".")]
    train, val, test = split_per_class(items, 0.5, 0.2, seed=int(cfg.get("split_seed", 0)))
    return CALTECH101.splits(cfg, train, val, test, classes, directory,
                             {"split_file": None, "split": "per-class 50/20/30"})
