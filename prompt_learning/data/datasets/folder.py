"""``dataset=folder``: a user's images in ``root/<class folder>/*.jpg``, no code needed.

Class names come from the folder names (sorted; ``_`` becomes a space) or from an optional
``classnames.txt`` in the root with lines ``<folder> <class name>``. Without a split file the images
of each class are shuffled with ``split_seed`` and cut into train / val / test by ``split_fractions``
(Dassl's ``read_and_split_data`` rule); with ``split_file`` a Dassl-format JSON
(``{"train": [[relative path, label, class name], ...], "val": ..., "test": ...}``) is used as is,
paths relative to ``root`` and class names taken from the file. A ``classnames.txt`` line naming no class
folder, two folders given one class name, and an image whose pixels cannot be turned into RGB faithfully are
refused with the file and line or folder named (``prompt_learning.formats``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from prompt_learning.classes import check_class_names
from prompt_learning.data.split_files import read_split_file
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError
from prompt_learning.files import IMAGE_SUFFIXES
from prompt_learning.formats import FormatError, check_image_mode, load_rgb, read_name_map
from prompt_learning.progress import track


def read_classnames(root: Path, folders: list[str]) -> dict[str, str]:
    """Folder -> class name, from ``classnames.txt`` when present, else the folder name with ``_`` -> space;
    no two folders may end up with one class name."""
    names = {f: f.replace("_", " ") for f in folders}
    sources = {f: f"folder {f!r}" for f in folders}
    mapping = root / "classnames.txt"
    if mapping.is_file():
        for line_no, folder, name in read_name_map(mapping, "class-name file", "folder"):
            if folder not in names:
                raise FormatError(f"{mapping}: line {line_no}: names folder {folder!r}, which is not a class folder of "
                                  f"{str(root)!r} (class folders: {', '.join(folders[:5])}"
                                  f"{', ...' if len(folders) > 5 else ''}); fix the line or remove it.")
            names[folder] = name
            sources[folder] = f"folder {folder!r} ({mapping.name} line {line_no})"
    check_class_names([names[f] for f in folders], [sources[f] for f in folders], str(root))
    return names


def _class_images(root: Path) -> dict[str, list[str]]:
    if not root.is_dir():
        raise DataError(f"Dataset root {str(root)!r} does not exist or is not a directory. "
                        f"Set dataset.root=/path/to/class_folders.")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"Dataset root {str(root)!r} has no class folders; expected root/<class name>/*.jpg.")
    images = {f: sorted(str(p) for p in (root / f).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) for f in folders}
    for folder, files in images.items():
        if not files:
            raise DataError(f"Class folder {str(root / folder)!r} contains no images ({sorted(IMAGE_SUFFIXES)}). "
                            f"Add images or remove the folder.")
    return images


def _random_split(by_class: list[list[Datum]], fractions: tuple[float, float], seed: int):
    rng = random.Random(seed)
    train, val, test = [], [], []
    for items in by_class:
        items = list(items)
        rng.shuffle(items)
        n_train, n_val = round(len(items) * fractions[0]), round(len(items) * fractions[1])
        if n_train < 1 or len(items) - n_train - n_val < 1:
            raise DataError(f"Class {items[0].classname!r} has {len(items)} images, too few to split into "
                            f"train/val/test with fractions {fractions}; add images or give a split_file.")
        train += items[:n_train]
        val += items[n_train : n_train + n_val]
        test += items[n_train + n_val :]
    return train, val, test


def verify_images(items: list[Datum]) -> None:
    """Open every image once: an unreadable file, or one whose pixels cannot be turned into RGB faithfully
    (``formats.check_image_mode``), is refused with its path named."""
    for item in track(items, f"Verifying {len(items)} images", unit="img"):
        try:
            with Image.open(item.ref) as image:
                check_image_mode(image, item.ref)
                image.verify()
        except FormatError:
            raise
        except Exception as exc:
            raise DataError(f"Cannot read image {item.ref!r} (class {item.classname!r}): {exc}. "
                            f"Remove or replace the file.") from None


def build_folder(cfg: Mapping[str, Any]) -> DatasetSplits:
    if not cfg.get("root"):
        raise DataError("dataset=folder needs dataset.root=/path/to/class_folders.")
    root = Path(str(cfg["root"])).expanduser()
    if cfg.get("split_file"):
        if not root.is_dir():
            raise DataError(f"Dataset root {str(root)!r} does not exist; set dataset.root to the folder the "
                            f"split file's paths are relative to.")
        train, val, test, classnames = read_split_file(Path(str(cfg["split_file"])).expanduser(), root)
    else:
        images = _class_images(root)
        names = read_classnames(root, list(images))
        classnames = tuple(names[f] for f in images)
        by_class = [[Datum(p, label, names[f]) for p in files] for label, (f, files) in enumerate(images.items())]
        fractions = tuple(cfg.get("split_fractions", (0.5, 0.2)))
        train, val, test = _random_split(by_class, fractions, int(cfg.get("split_seed", 0)))
    if cfg.get("verify_images", True):
        verify_images(train + val + test)
    return DatasetSplits(name=str(cfg.get("name", "folder")), train=train, val=val, test=test,
                         classnames=classnames, template=str(cfg.get("template") or "a photo of a {}."),
                         load_image=load_rgb,
                         info={"root": str(root), "split_file": cfg.get("split_file"),
                               "split_seed": None if cfg.get("split_file") else int(cfg.get("split_seed", 0))},
                         generated_split=not cfg.get("split_file"))
