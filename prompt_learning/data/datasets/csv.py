"""``dataset=csv``: a user's images listed in a CSV file, no code needed.

Columns (names configurable): ``path`` (absolute, or relative to ``dataset.root``, default the CSV's
folder), ``label`` (a class name, or an integer when a ``classnames.txt`` with lines
``<label> <class name>`` is given), and optionally ``split`` (train / val / test). Without a split
column each class is shuffled with ``split_seed`` and cut by ``split_fractions``; the run writes the
split it used to ``<run dir>/dataset_split.json``, which ``dataset.split_file`` (of ``dataset=folder``)
or the ``split`` column can reuse.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.folder import _random_split, load_rgb, verify_images
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


def _read_classnames(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            label, _, name = line.strip().partition(" ")
            if not label.isdigit() or not name.strip():
                raise DataError(f"{path}:{line_no}: expected '<integer label> <class name>', got {line!r}.")
            names[int(label)] = name.strip()
    return names


def build_csv(cfg: Mapping[str, Any]) -> DatasetSplits:
    if not cfg.get("file"):
        raise DataError("dataset=csv needs dataset.file=/path/to/images.csv.")
    path = Path(str(cfg["file"])).expanduser()
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; fix dataset.file.")
    root = Path(str(cfg.get("root") or path.parent)).expanduser()
    path_col, label_col, split_col = cfg.get("path_column", "path"), cfg.get("label_column", "label"), cfg.get(
        "split_column", "split")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        for needed in (path_col, label_col):
            if needed not in columns:
                raise DataError(f"{path}: no column {needed!r} (columns: {columns}); set dataset.path_column / "
                                f"dataset.label_column.")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path} lists no images.")
    mapping = Path(str(cfg["classnames_file"])).expanduser() if cfg.get("classnames_file") else None
    if mapping is not None:
        names = _read_classnames(mapping)
        for line_no, row in enumerate(rows, 2):
            if not row[label_col].strip().isdigit() or int(row[label_col]) not in names:
                raise DataError(f"{path}:{line_no}: label {row[label_col]!r} is not an integer listed in {mapping}.")
        labels = sorted(names)
        classnames = tuple(names[i] for i in labels)
        label_of = {str(i): k for k, i in enumerate(labels)}
    else:
        classnames = tuple(sorted({row[label_col].strip() for row in rows}))
        label_of = {name: k for k, name in enumerate(classnames)}
    items_by_split: dict[str, list[Datum]] = {s: [] for s in SPLIT_NAMES}
    has_split = split_col in columns
    for line_no, row in enumerate(rows, 2):
        image = Path(row[path_col].strip())
        label = label_of[row[label_col].strip()]
        datum = Datum(str(image if image.is_absolute() else root / image), label, classnames[label])
        split = row[split_col].strip().lower() if has_split else "train"
        if split not in items_by_split:
            raise DataError(f"{path}:{line_no}: split {row[split_col]!r}; use one of {SPLIT_NAMES}.")
        items_by_split[split].append(datum)
    missing = [d.ref for split in items_by_split.values() for d in split if not Path(d.ref).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} listed images do not exist, e.g. {missing[:3]}; paths are relative "
                        f"to {str(root)!r} (set dataset.root to change that).")
    if has_split:
        train, val, test = (items_by_split[s] for s in SPLIT_NAMES)
    else:
        by_class = [[d for d in items_by_split["train"] if d.label == k] for k in range(len(classnames))]
        fractions = tuple(cfg.get("split_fractions", (0.5, 0.2)))
        train, val, test = _random_split([c for c in by_class if c], fractions, int(cfg.get("split_seed", 0)))
    if not train or not test:
        raise DataError(f"{path}: the split has {len(train)} train and {len(test)} test images; both need some.")
    if cfg.get("verify_images", True):
        verify_images(train + val + test)
    return DatasetSplits(name=str(cfg.get("name", "csv")), train=train, val=val, test=test, classnames=classnames,
                         template=str(cfg.get("template") or "a photo of a {}."), load_image=load_rgb,
                         info={"file": str(path), "root": str(root), "split": "column" if has_split else "generated",
                               "split_seed": None if has_split else int(cfg.get("split_seed", 0))},
                         generated_split=not has_split)
