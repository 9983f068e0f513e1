"""Dassl split files: ``{"train": [[relative path, label, class name], ...], "val": [...], "test": [...]}``
(the ``split_zhou_<Name>.json`` files of the CoOp benchmarks, and our generated splits)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prompt_learning.data.types import Datum
from prompt_learning.errors import DataError
from prompt_learning.files import atomic_write_json

SPLITS = ("train", "val", "test")


def read_split_file(path: Path, base: Path) -> tuple[list[Datum], list[Datum], list[Datum], tuple[str, ...]]:
    """Train / val / test items with paths joined to ``base``, and the class names in label order."""
    if not path.is_file():
        raise DataError(f"Split file {str(path)!r} does not exist.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"Split file {path} is not valid JSON ({exc}); download it again.") from None
    try:
        splits = tuple([Datum(str(base / rel), int(label), str(name)) for rel, label, name in data.get(key, [])]
                       for key in SPLITS)
    except (TypeError, ValueError):
        raise DataError(f"{path}: every entry must be [relative path, integer label, class name].") from None
    names: dict[int, str] = {}
    for item in (d for split in splits for d in split):
        if names.setdefault(item.label, item.classname) != item.classname:
            raise DataError(f"{path}: label {item.label} is named both {names[item.label]!r} and "
                            f"{item.classname!r}; each label needs one class name.")
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: labels must be 0..{len(names) - 1} without gaps, found {sorted(names)[:10]}...")
    return (*splits, tuple(names[i] for i in range(len(names))))  # type: ignore[return-value]


def write_split_file(path: Path, base: Path, train: list[Datum], val: list[Datum], test: list[Datum]) -> None:
    """Atomically write a split file with paths relative to ``base``."""
    def rows(items: list[Datum]) -> list[list]:
        return [[os.path.relpath(d.ref, base), d.label, d.classname] for d in items]

    atomic_write_json(path, {"train": rows(train), "val": rows(val), "test": rows(test)})
