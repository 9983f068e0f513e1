"""SUN397 (Xiao et al., CVPR 2010): 397 scene categories.

Layout: ``$DATA/sun397/SUN397/<letter>/<category>[/<sub>]/*.jpg`` + ``$DATA/sun397/split_zhou_SUN397.json``
(class names as stored in the JSON). Without the split file, Dassl's fallback reads the official partition
files in ``$DATA/sun397/`` (from Partitions.zip): ``ClassName.txt`` (``/a/abbey`` per line; the line order
defines the labels), ``Training_01.txt`` and ``Testing_01.txt`` (``/a/abbey/sun_xxx.jpg``); the training list
is split 80/20 into train / val per class, test = ``Testing_01.txt``. Names: drop the letter folder, reverse
the rest and join with spaces (``/b/bakery/shop`` -> ``shop bakery``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark, split_trainval
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

SUN397 = Benchmark(name="sun397", folder="sun397", image_dir="SUN397", template="a photo of a {}.", n_classes=397,
                   split_file="split_zhou_SUN397.json", sizes=(15880, 3970, 19850))


def clean_name(category: str) -> str:
    """``/a/apartment_building/outdoor`` -> ``outdoor apartment_building`` (letter folder dropped, rest reversed)."""
    return " ".join(category.strip("/").split("/")[1:][::-1])


def _lines(path: Path, directory: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"sun397: neither the split file {str(directory / SUN397.split_file)!r} nor the partition "
                        f"file {str(path)!r} exists; download {SUN397.split_file} into {str(directory)!r}, or extract "
                        f"the official Partitions.zip there ({DOWNLOAD_HINT}).")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read(path: Path, directory: Path, images: Path, label_of: dict[str, int]) -> list[Datum]:
    items = []
    for line in _lines(path, directory):
        relative = line.strip("/")
        category = "/" + relative.rpartition("/")[0]
        if category not in label_of:
            raise DataError(f"sun397: {str(path)!r} lists {line!r}, whose category {category!r} is not in "
                            f"{str(directory / 'ClassName.txt')!r}.")
        items.append(Datum(str(images / relative), label_of[category], clean_name(category)))
    return items


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = SUN397.directory(cfg)
    if (directory / SUN397.split_file).is_file():
        return SUN397.from_split_file(cfg)
    images = SUN397.images(directory)
    categories = ["/" + line.strip("/") for line in _lines(directory / "ClassName.txt", directory)]
    label_of = {category: label for label, category in enumerate(categories)}
    trainval = _read(directory / "Training_01.txt", directory, images, label_of)
    test = _read(directory / "Testing_01.txt", directory, images, label_of)
    train, val = split_trainval(trainval, 0.2, seed=int(cfg.get("split_seed", 0)))
    return SUN397.splits(cfg, train, val, test, [clean_name(c) for c in categories], directory,
                         {"split_file": None, "split": "Training_01 80/20 train/val, Testing_01 test"})
