"""Few-shot index files: the K-shot train / val subset of a seed, as relative paths in JSON.

``<dataset dir>/split_fewshot/shot_<K>-seed_<S>.json`` holds ``{"source_split": <digest of the split it
was drawn from>, "train": [...], "val": [...]}`` with image paths relative to the dataset directory, so the
file survives moving the data root (Dassl's pickles store absolute paths). Like Dassl's cache, an existing
index is used as is and shared by every method; its sha256 goes into results.json so two runs can be
checked to have trained on the same images. ``read_index`` checks it: a damaged or foreign index is
refused with the entry named.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from prompt_learning.data.types import Datum
from prompt_learning.errors import DataError
from prompt_learning.files import atomic_write_bytes
from prompt_learning.formats import FormatError, check_keys, expect, load_json_file

log = logging.getLogger(__name__)
Sampler = Callable[[], tuple[list[Datum], list[Datum]]]


def index_path(base_dir: str | Path, shots: int, seed: int) -> Path:
    return Path(base_dir) / "split_fewshot" / f"shot_{shots}-seed_{seed}.json"


def pool_digest(pool_train: Sequence[Datum], pool_val: Sequence[Datum], base: Path) -> str:
    """Identifies the train / val split an index was sampled from (another split file or split seed differs)."""
    lines = sorted(f"{split} {os.path.relpath(d.ref, base)} {d.label}\n" for split, items
                   in (("train", pool_train), ("val", pool_val)) for d in items)
    return hashlib.sha256("".join(lines).encode()).hexdigest()[:16]


def _encode(train: Sequence[Datum], val: Sequence[Datum], base: Path, source: str) -> bytes:
    data = {"source_split": source,
            **{split: [os.path.relpath(d.ref, base) for d in items] for split, items in (("train", train), ("val", val))}}
    return (json.dumps(data, indent=1) + "\n").encode()


def read_index(path: Path) -> dict:
    """The checked content of an index file: ``source_split`` a string, ``train`` and ``val`` lists of paths."""
    fix = f"Delete {path} to sample the subset again."
    data = load_json_file(path, "few-shot index", fix)
    expect(data, dict, str(path), 'an object {"source_split": ..., "train": [...], "val": [...]}', fix)
    check_keys(data, str(path), ("source_split", "train", "val"), fix=fix)
    expect(data["source_split"], str, f"{path}: source_split", "a string", fix)
    for split in ("train", "val"):
        expect(data[split], list, f"{path}: {split}", "a list of image paths", fix)
        for i, rel in enumerate(data[split]):
            expect(rel, str, f"{path}: {split}[{i}]", "an image path relative to the dataset directory", fix)
    return data


def _listed(lookup: dict[str, Datum], listed: list[str], split: str, path: Path) -> list[Datum]:
    """The items of ``split`` an index lists, each listed once and present in the dataset's split."""
    seen: dict[str, int] = {}
    for i, rel in enumerate(listed):
        if rel not in lookup:
            raise FormatError(f"{path}: {split}[{i}]: {rel!r} is not in this dataset's {split} split; the index was "
                              f"made from other data. Delete {path} to sample again.")
        if rel in seen:
            raise FormatError(f"{path}: {split}[{i}]: {rel!r} is listed twice (first at {split}[{seen[rel]}]). "
                              f"Delete {path} to sample again.")
        seen[rel] = i
    return [lookup[rel] for rel in listed]


def cached_few_shot(base_dir: str | Path, shots: int, seed: int, pool_train: Sequence[Datum],
                    pool_val: Sequence[Datum], sample: Sampler) -> tuple[list[Datum], list[Datum], dict]:
    """The (train, val) subset from the index file when it exists, else ``sample()`` written to it.
    Returns the subset and {"few_shot_index": path, "few_shot_index_sha256": digest}."""
    base, path = Path(base_dir), index_path(base_dir, shots, seed)
    source = pool_digest(pool_train, pool_val, base)
    if path.is_file():
        payload = path.read_bytes()
        data = read_index(path)
        if data["source_split"] != source:
            raise DataError(f"{path} was sampled from another train/val split of this dataset (another split file or "
                            f"split_seed). Delete {path} to sample again from the current split.")
        lookups = {split: {os.path.relpath(d.ref, base): d for d in items}
                   for split, items in (("train", pool_train), ("val", pool_val))}
        train, val = (_listed(lookups[split], data[split], split, path) for split in ("train", "val"))
        log.info("Few-shot subset read from %s", path)
    else:
        train, val = sample()
        payload = _encode(train, val, base, source)
        try:
            atomic_write_bytes(path, payload)
        except OSError as exc:  # a read-only data directory: keep going, the sampling is deterministic anyway
            log.warning("Could not write the few-shot index %s (%s); continuing without it.", path, exc)
    return train, val, {"few_shot_index": str(path), "few_shot_index_sha256": hashlib.sha256(payload).hexdigest()}
