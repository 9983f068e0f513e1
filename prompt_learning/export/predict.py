"""Batch prediction over image files with a learned prompt (``scripts/predict.py``).

Images come from a file, a folder (recursively) or a glob; class names from a text file (one per
line) or a comma-separated list. Unreadable images are skipped and returned with the reason, for the
caller to report once (the predict command prints one warning line each). The result is a
CSV: ``path, label_1, prob_1, ..., label_k, prob_k``, written atomically.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from rich.progress import Progress

from prompt_learning.classes import check_class_names
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.export.prompted_clip import PromptedCLIP
from prompt_learning.files import IMAGE_SUFFIXES, atomic_write_bytes
from prompt_learning.formats import image_to_rgb, read_text

log = logging.getLogger(__name__)


def image_paths(spec: str) -> list[Path]:
    """A file, every image below a folder, or the matches of a glob pattern, sorted."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise DataError(f"No images found for images={spec!r} (a file, a folder or a glob of {sorted(IMAGE_SUFFIXES)}).")
    return found


def read_classnames(spec: str | Sequence[str]) -> list[str]:
    """Class names from a list, a text file (one per line, UTF-8, blank lines skipped) or a comma-separated
    string; a name given twice is refused with both lines (or positions) named (``classes.check_class_names``)."""
    if not isinstance(spec, str):
        entries = [(str(n).strip(), f"position {i}") for i, n in enumerate(spec)]
        where = "classnames"
    elif Path(spec).expanduser().is_file():
        text = read_text(Path(spec).expanduser(), "class-name file")
        entries = [(line.strip(), f"line {i}") for i, line in enumerate(text.splitlines(), 1)]
        where = str(Path(spec).expanduser())
    else:
        entries = [(n.strip(), f"item {i + 1}") for i, n in enumerate(spec.strip("[]").split(","))]
        where = f"classnames={spec!r}"
    entries = [(n, source) for n, source in entries if n]
    names = list(check_class_names([n for n, _ in entries], [source for _, source in entries], where))
    if len(names) < 2:
        raise DataError(f"classnames={spec!r} gives {len(names)} class name(s); give at least two (a file with one "
                        f"per line, or a comma-separated list).")
    return names


def predict_files(model: PromptedCLIP, paths: Sequence[Path], classnames: Sequence[str], top_k: int = 5,
                  batch_size: int = 32, show_progress: bool = True) -> tuple[list[list], list[tuple[str, str]]]:
    """CSV rows for the readable images, and (path, reason) for the skipped ones."""
    if not paths:
        raise DataError("No images to classify: the image list is empty. Give a file, a folder or a glob that "
                        "matches images.")
    bad = [f"{k}={v!r}" for k, v in (("top_k", top_k), ("batch_size", batch_size)) if not isinstance(v, int) or v < 1]
    if bad:
        raise ConfigurationError(f"{', '.join(bad)} is not valid; use an integer >= 1.")
    rows: list[list] = []
    skipped: list[tuple[str, str]] = []
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("predicting", total=len(paths))
        for start in range(0, len(paths), batch_size):
            batch, names = [], []
            for path in paths[start : start + batch_size]:
                try:
                    with Image.open(path) as image:
                        rgb = image_to_rgb(image, str(path))
                    # a test-time-adaptive method makes its own views of the decoded image
                    batch.append(rgb if model.method.test_time_adaptive else model.preprocess(rgb))
                    names.append(str(path))
                except Exception as exc:
                    skipped.append((str(path), str(exc)))
                    log.debug("Skipping unreadable image %s: %s", path, exc)  # the caller reports it
            if batch:
                pixels = batch if model.method.test_time_adaptive else torch.stack(batch)
                pred = model.predict(pixels, classnames, top_k=top_k)
                for name, labels, probs in zip(names, pred.top_labels, pred.top_probs.tolist(), strict=True):
                    rows.append([name, *[v for pair in zip(labels, probs, strict=True) for v in pair]])
            progress.advance(task, len(paths[start : start + batch_size]))
    return rows, skipped


def write_predictions(path: str | Path, rows: list[list], top_k: int) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", *[f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("label", "prob")]])
    for row in rows:
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    atomic_write_bytes(Path(path), buffer.getvalue().encode())
    return Path(path)
