"""Caltech101 (Fei-Fei et al., 2004): 100 object classes (``BACKGROUND_Google`` and ``Faces_easy`` dropped).

Layout: ``$DATA/caltech-101/101_ObjectCategories/<class>/*.jpg`` + ``$DATA/caltech-101/split_zhou_Caltech101.json``.
Without the split file, Dassl's fallback: class folders in Python sorted order (capitals first), the two
ignored folders dropped, four renames (``airplanes``→``airplane``, ``Faces``→``face``, ``Leopards``→``leopard``,
``Motorbikes``→``motorbike``), per class 50% train / 20% val / 30% test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits

CALTECH101 = Benchmark(name="caltech101", folder="caltech-101", image_dir="101_ObjectCategories",
                       template="a photo of a {}.", n_classes=100, split_file="split_zhou_Caltech101.json",
                       sizes=(4128, 1649, 2465))
IGNORED = ("BACKGROUND_Google", "Faces_easy")
RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    return CALTECH101.from_split_file_or_class_folders(cfg, ignore=IGNORED, renames=RENAMES)

