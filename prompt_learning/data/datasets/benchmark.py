"""What the CoOp benchmarks share: where a dataset lives under the data root, its split file, the
image-existence check, and Dassl's fallback split rules (docs/datasets.md).

Each benchmark is one small module that declares a :class:`Benchmark` (folder, image directory,
split file, class count, hand-written template, sizes) and a ``build(cfg)`` that returns
``DatasetSplits``. The data root is ``data.root`` (or the ``PL_DATA_ROOT`` environment variable),
laid out as in CoOp's dataset instructions (docs/datasets.md): ``$DATA/<folder>/<image dir>/...`` plus ``$DATA/<folder>/<split file>``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.folder import load_rgb
from prompt_learning.data.fewshot import group_by_label
from prompt_learning.data.split_files import read_split_file
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

DOWNLOAD_HINT = "see https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md for the archive and the split file"


@dataclass(frozen=True)
class Benchmark:
    name: str  # config name, e.g. "dtd"
    folder: str  # directory under the data root, e.g. "dtd"
    image_dir: str  # image directory inside ``folder``, e.g. "images"
    template: str  # the hand-written zero-shot template (docs/datasets.md)
    n_classes: int
    split_file: str | None = None  # e.g. "split_zhou_DescribableTextures.json"; None: official lists
    sizes: tuple[int, int, int] | None = None  # (train, val, test) of the full dataset (docs/datasets.md)
    paths_relative_to_folder: bool = False  # StanfordCars: split paths are relative to ``folder``

    def directory(self, cfg: Mapping[str, Any]) -> Path:
        """``<data root>/<folder>``, or a ``DataError`` saying what to set or create."""
        root = cfg.get("root")
        if not root or str(root) in ("None", "null"):
            raise DataError(f"dataset={self.name} needs the data root: set data.root=/path/to/DATA (or the "
                            f"PL_DATA_ROOT environment variable, or configs/local/default.yaml); "
                            f"{self.name} is then read from <root>/{self.folder}/.")
        path = Path(str(root)).expanduser() / self.folder
        if not path.is_dir():
            raise DataError(f"{self.name}: expected the folder {str(path)!r} (data root {str(root)!r} + "
                            f"{self.folder!r}); {DOWNLOAD_HINT}.")
        return path

    def images(self, directory: Path) -> Path:
        path = directory / self.image_dir
        if not path.is_dir():
            raise DataError(f"{self.name}: expected the image folder {str(path)!r}; {DOWNLOAD_HINT}.")
        return path

    def splits(self, cfg: Mapping[str, Any], train: list[Datum], val: list[Datum], test: list[Datum],
               classnames: Sequence[str], directory: Path, info: dict | None = None) -> DatasetSplits:
        """Checks every image exists, then wraps the lists with this benchmark's template."""
        check_images_exist(self.name, train + val + test)
        return DatasetSplits(name=self.name, train=train, val=val, test=test, classnames=tuple(classnames),
                             template=str(cfg.get("template") or self.template), load_image=load_rgb,
                             info={"root": str(directory), **(info or {})}, base_dir=str(directory))

    def from_split_file(self, cfg: Mapping[str, Any]) -> DatasetSplits:
        """The usual case: ``<folder>/<split_file>`` with paths under the image folder."""
        directory = self.directory(cfg)
        assert self.split_file is not None
        path = directory / self.split_file
        if not path.is_file():
            raise DataError(f"{self.name}: the split file {str(path)!r} is missing; download "
                            f"{self.split_file} into {str(directory)!r} ({DOWNLOAD_HINT}).")
        base = directory if self.paths_relative_to_folder else self.images(directory)
        train, val, test, classnames = read_split_file(path, base)
        return self.splits(cfg, train, val, test, classnames, directory, {"split_file": str(path)})


    def from_split_file_or_class_folders(self, cfg: Mapping[str, Any], ignore: Sequence[str] = (),
                                         renames: Mapping[str, str] | None = None) -> DatasetSplits:
        """The split file when present, else Dassl's ``read_and_split_data`` fallback: class folders in
        sorted order (hidden ones and ``ignore`` skipped, ``renames`` applied to their names), each
        shuffled with ``split_seed`` and cut 50% train / 20% val / 30% test."""
        directory = self.directory(cfg)
        if self.split_file and (directory / self.split_file).is_file():
            return self.from_split_file(cfg)
        images = self.images(directory)
        folders = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.name not in ignore)
        classes = [(renames or {}).get(f, f) for f in folders]
        items = [Datum(str(f), label, classes[label]) for label, folder in enumerate(folders)
                 for f in sorted((images / folder).iterdir()) if f.is_file() and not f.name.startswith(".")]
        train, val, test = split_per_class(items, 0.5, 0.2, seed=int(cfg.get("split_seed", 0)))
        return self.splits(cfg, train, val, test, classes, directory, {"split_file": None, "split": "per-class 50/20/30"})

    def from_required_split_file(self, cfg: Mapping[str, Any], fallback_inputs: str) -> DatasetSplits:
        """Datasets whose fallback reads MATLAB files (scipy is not a dependency): the split file is required."""
        directory = self.directory(cfg)
        assert self.split_file is not None
        path = directory / self.split_file
        if not path.is_file():
            raise DataError(f"{self.name}: the split file {str(path)!r} is missing and is required (the fallback from "
                            f"{fallback_inputs} is not supported: it needs scipy); download {self.split_file} into "
                            f"{str(directory)!r} ({DOWNLOAD_HINT}).")
        return self.from_split_file(cfg)


def check_images_exist(dataset: str, items: Sequence[Datum], show: int = 3) -> None:
    """Every referenced image must exist (Dassl asserts it per Datum); name the first missing ones."""
    missing = [d.ref for d in items if not Path(d.ref).is_file()]
    if missing:
        examples = ", ".join(repr(m) for m in missing[:show])
        raise DataError(f"{dataset}: {len(missing)} of {len(items)} images listed in the split are missing, e.g. "
                        f"{examples}. Check that the archive was extracted into the expected folder ({DOWNLOAD_HINT}).")


def split_per_class(items: Sequence[Datum], p_train: float = 0.5, p_val: float = 0.2, seed: int = 0
                    ) -> tuple[list[Datum], list[Datum], list[Datum]]:
    """Dassl's ``read_and_split_data`` rule: per class, shuffle and cut train / val / test by fractions."""
    rng = random.Random(seed)
    train, val, test = [], [], []
    for group in group_by_label(items).values():
        group = list(group)
        rng.shuffle(group)
        n_train, n_val = round(len(group) * p_train), round(len(group) * p_val)
        train += group[:n_train]
        val += group[n_train : n_train + n_val]
        test += group[n_train + n_val :]
    return train, val, test


def split_trainval(items: Sequence[Datum], p_val: float = 0.2, seed: int = 0) -> tuple[list[Datum], list[Datum]]:
    """Dassl's ``split_trainval``: per class, shuffle and move round(n * p_val) (at least 1) items to val."""
    rng = random.Random(seed)
    train, val = [], []
    for group in group_by_label(items).values():
        group = list(group)
        rng.shuffle(group)
        n_val = max(1, round(len(group) * p_val))
        val += group[:n_val]
        train += group[n_val:]
    return train, val
