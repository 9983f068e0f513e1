"""EuroSAT (Helber et al., 2019): 10 land-use classes of Sentinel-2 RGB tiles.

Layout: ``$DATA/eurosat/2750/<class>/*.jpg`` (the layout of the original EuroSAT.zip) +
``$DATA/eurosat/split_zhou_EuroSAT.json`` (class names as stored in the JSON). Newer archives unpack as
``EuroSAT_RGB/``, which must be renamed or linked to ``2750`` (docs/datasets.md). Without the split
file, Dassl's fallback: per class 50% train / 20% val / 30% test of the sorted class folders, with the 10
class renames below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import Benchmark
from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import DataError

EUROSAT = Benchmark(name="eurosat", folder="eurosat", image_dir="2750", template="a centered satellite photo of {}.",
                    n_classes=10, split_file="split_zhou_EuroSAT.json", sizes=(13500, 5400, 8100))
RENAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


def _images(directory: Path) -> Path:
    """``2750/``; a clear rename hint when only the newer archive's ``EuroSAT_RGB/`` is there."""
    rgb = directory / "EuroSAT_RGB"
    if not (directory / EUROSAT.image_dir).is_dir() and rgb.is_dir():
        raise DataError(f"eurosat: expected the image folder {str(directory / EUROSAT.image_dir)!r} but found "
                        f"{str(rgb)!r} (the newer archive's name): rename or link it, e.g. "
                        f"`ln -s EuroSAT_RGB 2750` inside {str(directory)!r}.")
    return EUROSAT.images(directory)


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    _images(EUROSAT.directory(cfg))  # the EuroSAT_RGB rename hint comes first
    return EUROSAT.from_split_file_or_class_folders(cfg, renames=RENAMES)

