"""FGVC-Aircraft (Maji et al., 2013): 100 aircraft model variants.

Layout: ``$DATA/fgvc_aircraft/`` is the ``data/`` folder of fgvc-aircraft-2013b renamed:
``images/<image id>.jpg``, ``variants.txt`` (one variant per line; the line order defines the labels)
and ``images_variant_{train,val,test}.txt`` (lines ``<image id> <variant name with spaces>``).
There is no ``split_zhou`` file: the official train / val / test lists are the split (never trainval).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

AIRCRAFT = Benchmark(name="fgvc_aircraft", folder="fgvc_aircraft", image_dir="images",
                     template="a photo of a {}, a type of aircraft.", n_classes=100, split_file=None,
                     sizes=(3334, 3333, 3333))
FIX = "extract fgvc-aircraft-2013b.tar.gz and rename its data/ folder to fgvc_aircraft"


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"fgvc_aircraft: the file {str(path)!r} is missing; {FIX} ({DOWNLOAD_HINT}).")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = AIRCRAFT.directory(cfg)
    images = AIRCRAFT.images(directory)
    classnames = _lines(directory / "variants.txt")
    label_of = {name: label for label, name in enumerate(classnames)}
    splits = []
    for split in ("train", "val", "test"):
        path = directory / f"images_variant_{split}.txt"
        items = []
        for line in _lines(path):
            image_id, _, variant = line.partition(" ")
            if variant not in label_of:
                raise DataError(f"fgvc_aircraft: {str(path)!r} names the variant {variant!r}, which is not a line "
                                f"of {str(directory / 'variants.txt')!r}; {FIX} ({DOWNLOAD_HINT}).")
            items.append(Datum(str(images / f"{image_id}.jpg"), label_of[variant], variant))
        splits.append(items)
    train, val, test = splits
    return AIRCRAFT.splits(cfg, train, val, test, classnames, directory,
                           {"split_file": None, "split": "official images_variant_{train,val,test}.txt"})
