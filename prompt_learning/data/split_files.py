"""Dassl split files: ``{"train": [[relative path, label, class name], ...], "val": [...], "test": [...]}``
(the ``split_zhou_<Name>.json`` files of the CoOp benchmarks, and our generated splits).

The schema, checked entry by entry (errors name the file, the entry as ``train[12]`` and what was expected):
an object with exactly the keys ``train``, ``val`` and ``test``; each a list (``val`` may be empty); each entry a
list of a non-empty relative path, an integer label >= 0 and a class name; every label one class name, the
labels 0..C-1 without gaps, and no two classes of one name.
"""

from __future__ import annotations

import os
from pathlib import Path

from prompt_learning.classes import check_class_names
from prompt_learning.data.types import Datum
from prompt_learning.files import atomic_write_json
from prompt_learning.formats import FormatError, check_keys, expect, expect_int, load_json_file

SPLITS = ("train", "val", "test")
ENTRY = "[relative image path, integer label, class name]"


def _entry(raw: object, at: str, base: Path) -> Datum:
    """One ``[relative path, label, class name]`` entry."""
    expect(raw, list, at, ENTRY)
    if len(raw) != 3:  # type: ignore[arg-type]
        raise FormatError(f"{at}: expected {ENTRY}, got a list of {len(raw)} item(s).")  # type: ignore[arg-type]
    rel, label, name = raw  # type: ignore[misc]
    if not isinstance(rel, str) or not rel.strip():
        raise FormatError(f"{at}: the image path is {rel!r}; expected a non-empty path relative to {str(base)!r}.")
    expect_int(label, f"{at}: label")
    expect(name, str, f"{at}: class name", "a string")
    return Datum(str(base / rel), label, name)


def read_split_file(path: Path, base: Path) -> tuple[list[Datum], list[Datum], list[Datum], tuple[str, ...]]:
    """Train / val / test items with paths joined to ``base``, and the class names in label order."""
    path = Path(path)
    data = load_json_file(path, "split file", "Download it again or fix it.")
    expect(data, dict, str(path), 'an object {"train": [...], "val": [...], "test": [...]}')
    check_keys(data, str(path), SPLITS)
    splits: list[list[Datum]] = []
    first_at: dict[int, str] = {}
    names: dict[int, str] = {}
    for key in SPLITS:
        expect(data[key], list, f"{path}: {key}", f"a list of {ENTRY} entries")
        items = [_entry(raw, f"{path}: {key}[{i}]", base) for i, raw in enumerate(data[key])]
        for i, item in enumerate(items):
            if names.setdefault(item.label, item.classname) != item.classname:
                raise FormatError(f"{path}: {key}[{i}]: label {item.label} is named both {names[item.label]!r} and "
                                  f"{item.classname!r} (the first at {first_at[item.label]}); each label needs one "
                                  f"class name.")
            first_at.setdefault(item.label, f"{key}[{i}]")
        splits.append(items)
    if sorted(names) != list(range(len(names))):
        gaps = sorted(set(range(max(names, default=-1) + 1)) - set(names))
        raise FormatError(f"{path}: labels must be 0..{len(names) - 1} without gaps; no entry has label(s) "
                          f"{gaps[:10]}.")
    labels = range(len(names))
    check_class_names([names[i] for i in labels], [f"label {i} ({first_at[i]})" for i in labels], str(path))
    return (*splits, tuple(names[i] for i in labels))  # type: ignore[return-value]


def write_split_file(path: Path, base: Path, train: list[Datum], val: list[Datum], test: list[Datum]) -> None:
    """Atomically write a split file with paths relative to ``base``."""
    def rows(items: list[Datum]) -> list[list]:
        return [[os.path.relpath(d.ref, base), d.label, d.classname] for d in items]

    atomic_write_json(path, {"train": rows(train), "val": rows(val), "test": rows(test)})
