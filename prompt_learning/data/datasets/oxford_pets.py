"""Oxford-IIIT Pets (Parkhi et al., CVPR 2012): 37 cat and dog breeds.

Layout: ``$DATA/oxford_pets/images/*.jpg`` + ``$DATA/oxford_pets/annotations/{trainval,test}.txt`` +
``$DATA/oxford_pets/split_zhou_OxfordPets.json``. Without the split file, Dassl's fallback: the official
lists (lines ``<image stem> <class id, 1-based> <species> <breed id>``; label = class id - 1; class name =
the stem without its trailing ``_<index>``, lower-cased), trainval cut per class 80% train / 20% val.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark, split_trainval
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

OXFORD_PETS = Benchmark(name="oxford_pets", folder="oxford_pets", image_dir="images",
                        template="a photo of a {}, a type of pet.", n_classes=37,
                        split_file="split_zhou_OxfordPets.json", sizes=(2944, 736, 3669))


def read_annotations(path: Path, images: Path) -> list[Datum]:
    """Dassl's ``OxfordPets.read_data``: one Datum per line of an official list."""
    if not path.is_file():
        raise DataError(f"oxford_pets: without {OXFORD_PETS.split_file} the official list {str(path)!r} is needed "
                        f"and is missing; {DOWNLOAD_HINT}.")
    items = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not parts[1].isdigit() or int(parts[1]) < 1:
            raise DataError(f"{path}:{line_no}: expected '<image stem> <class id> <species> <breed id>', got {line!r}.")
        stem, class_id = parts[0], int(parts[1])
        breed = "_".join(stem.split("_")[:-1]).lower()
        items.append(Datum(str(images / f"{stem}.jpg"), class_id - 1, breed))
    return items


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = OXFORD_PETS.directory(cfg)
    if (directory / OXFORD_PETS.split_file).is_file():
        return OXFORD_PETS.from_split_file(cfg)
    images = OXFORD_PETS.images(directory)
    trainval = read_annotations(directory / "annotations" / "trainval.txt", images)
    test = read_annotations(directory / "annotations" / "test.txt", images)
    names: dict[int, str] = {}
    for item in trainval + test:
        if names.setdefault(item.label, item.classname) != item.classname:
            raise DataError(f"oxford_pets: class id {item.label + 1} is named both {names[item.label]!r} and "
                            f"{item.classname!r} in the annotation lists.")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"oxford_pets: the annotation class ids must be 1..{len(names)} without gaps.")
    train, val = split_trainval(trainval, 0.2, seed=int(cfg.get("split_seed", 0)))
    return OXFORD_PETS.splits(cfg, train, val, test, [names[i] for i in range(len(names))], directory,
                              {"split_file": None, "split": "official trainval 80/20 + official test"})
