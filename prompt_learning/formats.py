"""The checks every file the project reads goes through: one reader per kind of file, shared schema helpers.

Each format has one reader: Dassl split files (``data/split_files.py``), few-shot indices
(``data/fewshot_index.py``), dataset CSVs (``data/datasets/csv.py``), ``classnames.txt`` files
(:func:`read_name_map`), ``prompt_config.json`` and ``prompts.safetensors`` (``export/io.py``), results
records (``results/records.py``), checkpoints (``engine/bookkeeping.py``) and images (:func:`load_rgb`).
They all use the helpers below, so that every refusal is a :class:`~prompt_learning.errors.FormatError`
naming the file, the entry (a line, an index or a key), what was expected and the fix.

Text is read as UTF-8, with or without the byte-order mark spreadsheet programs write. Images are
turned into 8-bit RGB faithfully or refused: 16-bit greyscale is scaled (not clipped), transparent
pixels are laid on white (not on whatever colour they hide), formats without a fixed range (32-bit
integer, floating point) are refused, and an animated image gives its first frame.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prompt_learning.errors import FormatError
from prompt_learning.registry import close_matches

__all__ = ["FormatError", "check_image_mode", "check_keys", "describe", "expect", "expect_int", "image_to_rgb",
           "load_json_file", "load_rgb", "read_csv_rows", "read_name_map", "read_text"]

_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
          float: "a number"}


def describe(value: Any, width: int = 60) -> str:
    """A JSON value as an error shows it: its kind and a shortened rendering (``a list ["a", 1]``)."""
    if value is None:
        return "null"
    kind = _KINDS.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {text if len(text) <= width else text[: width - 3] + '...'}"


def expect(value: Any, kind: type | tuple[type, ...], at: str, expected: str, fix: str = "") -> Any:
    """``value`` when it is an instance of ``kind`` (``True`` is never an ``int`` here), else a FormatError
    ``"<at>: expected <expected>, got <describe(value)>. <fix>"``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise FormatError(f"{at}: expected {expected}, got {describe(value)}.{' ' + fix if fix else ''}")
    return value


def expect_int(value: Any, at: str, minimum: int = 0, fix: str = "") -> int:
    """An integer (never a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FormatError(f"{at}: expected an integer >= {minimum}, got {describe(value)}.{' ' + fix if fix else ''}")
    return value


def check_keys(obj: dict, at: str, required: Sequence[str], optional: Collection[str] = (), fix: str = "") -> None:
    """Refuse a missing key of ``required`` and any key that is neither required nor ``optional`` (a
    misspelt key is named with the known key it is closest to)."""
    known = [*required, *optional]
    for key in obj:
        if key not in known:
            close = close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FormatError(f"{at}: unknown key {key!r}{hint}; the keys of this file are {', '.join(known)}."
                              f"{' ' + fix if fix else ''}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise FormatError(f"{at}: missing key(s) {', '.join(map(repr, missing))}; expected the keys "
                          f"{', '.join(required)}.{' ' + fix if fix else ''}")


def read_text(path: Path, what: str, fix: str = "") -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped); a FormatError names a missing or
    unreadable file, or the first line that is not UTF-8."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(f"The {what} {str(path)!r} does not exist.{' ' + fix if fix else ''}") from None
    except OSError as exc:
        raise FormatError(f"Cannot read the {what} {str(path)!r}: {exc.strerror or exc}.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = " (in a spreadsheet program: 'CSV UTF-8')" if "CSV" in what else ""
        raise FormatError(f"{path}: line {line}: the {what} is not UTF-8 text (byte {data[exc.start]:#04x}); save "
                          f"it as UTF-8{hint}.") from None


def load_json_file(path: Path, what: str, fix: str = "") -> Any:
    """The JSON value of ``path``; a file that does not parse names the line and column (and says when the
    file ends early, as one cut short by a crash does)."""
    text = read_text(path, what, fix)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        ends = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")  # reached the end
        cut = "; the file ends there: it was cut short" if ends else ""
        problem = exc.msg.removesuffix(" starting at").lower()  # json's words, e.g. "expecting value"
        raise FormatError(f"{path}: line {exc.lineno}, column {exc.colno}: the {what} is not valid JSON "
                          f"({problem}){cut}.{' ' + fix if fix else ''}") from None


def read_name_map(path: Path, what: str, key: str, fix: str = "") -> list[tuple[int, str, str]]:
    """``(line, key, class name)`` of a file with lines ``<key> <class name>`` (key: one word; blank lines
    skipped). A line without a name or a key given twice is refused with its line number(s)."""
    rows: list[tuple[int, str, str]] = []
    first: dict[str, int] = {}
    for line_no, line in enumerate(read_text(path, what, fix).splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise FormatError(f"{path}: line {line_no}: expected '<{key}> <class name>', got {line.strip()!r}."
                              f"{' ' + fix if fix else ''}")
        if parts[0] in first:
            raise FormatError(f"{path}: line {line_no}: {key} {parts[0]!r} is given a name again (first on line "
                              f"{first[parts[0]]}); keep one line per {key}.")
        first[parts[0]] = line_no
        rows.append((line_no, parts[0], parts[1].strip()))
    return rows


def read_csv_rows(path: Path, required: Sequence[str],
                  fix: str = "") -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line, row)`` pairs of a CSV file (UTF-8, byte-order mark allowed; blank lines
    skipped). A missing or repeated column, and a row with more or fewer cells than the header, are refused
    with the line number; columns beyond ``required`` are kept for the caller. Cells are stripped of spaces."""
    text = read_text(path, "CSV file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [c.strip() for c in next(reader, [])]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise FormatError(f"{path}: line 1: column(s) {', '.join(map(repr, repeated))} appear more than once "
                              f"in the header; give each column one name.")
        for needed in required:
            if needed not in header:
                raise FormatError(f"{path}: line 1: no column {needed!r} in the header (columns: {header})."
                                  f"{' ' + fix if fix else ''}")
        rows: list[tuple[int, dict[str, str]]] = []
        start = reader.line_num + 1
        for cells in reader:
            line_no, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise FormatError(f"{path}: line {line_no}: {len(cells)} cell(s) where the header has {len(header)} "
                                  f"({', '.join(header)}); give each row one cell per column (quote cells that "
                                  f"contain commas).")
            rows.append((line_no, {name: cell.strip() for name, cell in zip(header, cells, strict=True)}))
    except csv.Error as exc:
        raise FormatError(f"{path}: line {reader.line_num}: not valid CSV ({exc}).") from None
    return header, rows


_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_TRANSPARENT = ("RGBA", "LA", "PA", "RGBa")


def check_image_mode(image: Image.Image, where: str) -> None:
    """Refuse an image whose pixels have no fixed range (32-bit integer, floating point): no 8-bit RGB
    rendering of it is faithful. Everything else :func:`image_to_rgb` converts."""
    if image.mode == "F" or image.mode == "I" and image.format != "PNG":
        kind = "floating-point" if image.mode == "F" else "32-bit integer"
        raise FormatError(f"Cannot read image {where!r}: its pixels are {kind} (mode {image.mode}), which has no "
                          f"fixed range to map to 8-bit RGB; save it as an 8- or 16-bit PNG or a JPEG.")


def image_to_rgb(image: Image.Image, where: str) -> Image.Image:
    """``image`` as 8-bit RGB: 16-bit greyscale scaled by 1/257 (PIL's own conversion clips it at 255),
    transparency laid over white, an animated image's first frame (the frame PIL opens on)."""
    check_image_mode(image, where)
    if image.mode in _SIXTEEN_BIT or image.mode == "I":  # "I" here: a 16-bit PNG as older PIL versions open it
        levels = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.clip(np.rint(levels / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in _TRANSPARENT or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """The image file ``path`` as 8-bit RGB (:func:`image_to_rgb`)."""
    with Image.open(path) as image:
        return image_to_rgb(image, str(path))
