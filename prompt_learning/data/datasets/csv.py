"""``dataset=csv``: a user's images listed in a CSV file, no code needed.

Columns (names configurable): ``path`` (absolute, or relative to ``dataset.root``, default the CSV's
folder), ``label`` (a class name, or an integer when a ``classnames.txt`` with lines
``<label> <class name>`` is given), and optionally ``split`` (train / val / test). Without a split
column each class is shuffled with ``split_seed`` and cut by ``split_fractions``; the run writes the
split it used to ``<run dir>/dataset_split.json``, which ``dataset.split_file`` (of ``dataset=folder``)
or the ``split`` column can reuse.

The file is read as UTF-8 (a spreadsheet's byte-order mark is fine) and checked row by row: an empty path or
label cell, a row with more or fewer cells than the header, an image listed twice or missing, a label absent
from ``classnames.txt`` and two classes of one name are refused with the line named.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.classes import check_class_names
from prompt_learning.data.datasets.folder import _random_split, load_rgb, verify_images
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError
from prompt_learning.formats import FormatError, read_csv_rows, read_name_map

SPLIT_NAMES = ("train", "val", "test")


def _read_classnames(path: Path) -> dict[int, tuple[str, int]]:
    """``<integer label> <class name>`` lines: label -> (class name, line)."""
    names: dict[int, tuple[str, int]] = {}
    for line_no, label, name in read_name_map(path, "class-name file", "integer label"):
        if not (label.isascii() and label.isdigit()):
            raise FormatError(f"{path}: line {line_no}: expected '<integer label> <class name>', the label is "
                              f"{label!r}.")
        names[int(label)] = (name, line_no)
    return names


def _class_names(path: Path, rows: list[tuple[int, dict[str, str]]], label_col: str,
                 mapping: Path | None) -> tuple[tuple[str, ...], dict[str, int]]:
    """The class names in label order, and label cell -> label."""
    for line_no, row in rows:
        if not row[label_col]:
            raise FormatError(f"{path}: line {line_no}: the {label_col!r} cell is empty; give every image a label.")
    if mapping is None:
        first = {}
        for line_no, row in rows:
            first.setdefault(row[label_col], line_no)
        classnames = tuple(sorted(first))
        check_class_names(classnames, [f"label {n!r} (first on line {first[n]})" for n in classnames], str(path))
        return classnames, {name: k for k, name in enumerate(classnames)}
    names = _read_classnames(mapping)
    for line_no, row in rows:
        cell = row[label_col]
        if not (cell.isascii() and cell.isdigit()) or int(cell) not in names:
            raise FormatError(f"{path}: line {line_no}: label {cell!r} is not an integer listed in "
                              f"{mapping}; add it there or fix the cell.")
    labels = sorted(names)
    classnames = check_class_names([names[i][0] for i in labels],
                                   [f"label {i} ({mapping} line {names[i][1]})" for i in labels], str(mapping))
    position = {i: k for k, i in enumerate(labels)}
    return classnames, {row[label_col]: position[int(row[label_col])] for _, row in rows}  # "01" is label 1


def _check_images(path: Path, root: Path, located: list[tuple[int, Datum]]) -> None:
    """Each image listed once, and present."""
    seen: dict[str, int] = {}
    for line_no, datum in located:
        if datum.ref in seen:
            raise FormatError(f"{path}: line {line_no}: image {datum.ref!r} is listed again (first on line "
                              f"{seen[datum.ref]}); list each image once.")
        seen[datum.ref] = line_no
    missing = [(line_no, d.ref) for line_no, d in located if not Path(d.ref).is_file()]
    if missing:
        line_no, ref = missing[0]
        raise FormatError(f"{path}: line {line_no}: image {ref!r} does not exist ({len(missing)} of "
                          f"{len(located)} listed images are missing); paths are relative to {str(root)!r} (set dataset.root to "
                          f"change that).")


def build_csv(cfg: Mapping[str, Any]) -> DatasetSplits:
    if not cfg.get("file"):
        raise DataError("dataset=csv needs dataset.file=/path/to/images.csv.")
    path = Path(str(cfg["file"])).expanduser()
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist; fix dataset.file.")
    root = Path(str(cfg.get("root") or path.parent)).expanduser()
    path_col, label_col, split_col = cfg.get("path_column", "path"), cfg.get("label_column", "label"), cfg.get(
        "split_column", "split")
    columns, rows = read_csv_rows(path, (path_col, label_col), "Set dataset.path_column / dataset.label_column.")
    if not rows:
        raise DataError(f"{path} lists no images.")
    mapping = Path(str(cfg["classnames_file"])).expanduser() if cfg.get("classnames_file") else None
    classnames, label_of = _class_names(path, rows, label_col, mapping)
    items_by_split: dict[str, list[Datum]] = {s: [] for s in SPLIT_NAMES}
    has_split = split_col in columns
    located: list[tuple[int, Datum]] = []
    for line_no, row in rows:
        if not row[path_col]:
            raise FormatError(f"{path}: line {line_no}: the {path_col!r} cell is empty; give every row an image.")
        image = Path(row[path_col]).expanduser()
        label = label_of[row[label_col]]
        datum = Datum(str(image if image.is_absolute() else root / image), label, classnames[label])
        split = row[split_col].lower() if has_split else "train"
        if split not in items_by_split:
            raise FormatError(f"{path}: line {line_no}: split {row[split_col]!r}; use one of {SPLIT_NAMES}.")
        items_by_split[split].append(datum)
        located.append((line_no, datum))
    _check_images(path, root, located)
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
