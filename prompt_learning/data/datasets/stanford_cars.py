"""Stanford Cars (Krause et al., 3DRR 2013): 196 car models.

Layout: ``$DATA/stanford_cars/{cars_train,cars_test}/*.jpg`` + ``$DATA/stanford_cars/split_zhou_StanfordCars.json``,
whose paths are relative to the dataset folder (``cars_train/00001.jpg``). The split file is required: Dassl's
fallback reads the devkit ``.mat`` files (``devkit/cars_train_annos.mat``, ``cars_test_annos_withlabels.mat``,
``devkit/cars_meta.mat``), which needs scipy, not a dependency here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits

STANFORD_CARS = Benchmark(name="stanford_cars", folder="stanford_cars", image_dir="", template="a photo of a {}.",
                          n_classes=196, split_file="split_zhou_StanfordCars.json", sizes=(6509, 1635, 8041),
                          paths_relative_to_folder=True)


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    return STANFORD_CARS.from_required_split_file(cfg, "the devkit .mat files")

