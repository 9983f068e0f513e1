"""ImageNet (ILSVRC-2012): 1000 classes, the source dataset of cross-dataset transfer and domain generalisation.

Layout: ``$DATA/imagenet/images/train/<wnid>/*.JPEG``, ``$DATA/imagenet/images/val/<wnid>/*.JPEG`` (the
validation images sorted into wnid folders) + ``$DATA/imagenet/classnames.txt`` (lines ``<wnid> <name words>``,
CoOp's copy of OpenAI's cleaned names). There is no split file: labels are the rank of the sorted train wnid
folders, train = ``images/train``, test = ``images/val`` (50,000).

Deviation from CoOp, on purpose: CoOp also uses ``images/val`` as the *val* split (val = test). Here ``val``
is empty: validating on the 50,000 test images every epoch is costly, and the val split is never used for
model selection (the last epoch is kept). Files are listed in sorted order (Dassl: raw ``os.listdir``), so a
seed picks the same few-shot images on every machine. CoOp's ``preprocessed.pkl`` cache is not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

IMAGENET = Benchmark(name="imagenet", folder="imagenet", image_dir="images", template="a photo of a {}.",
                     n_classes=1000, split_file=None, sizes=(1281167, 0, 50000))
CLASSNAMES_HINT = "download CoOp's classnames.txt (linked from https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md)"


def read_classnames(path: Path, dataset: str = "imagenet") -> dict[str, str]:
    """``<wnid> <name words>`` per line -> ``{wnid: name}`` in file order."""
    if not path.is_file():
        raise DataError(f"{dataset}: the class-name file {str(path)!r} is missing; {CLASSNAMES_HINT} into "
                        f"{str(path.parent)!r}.")
    names: dict[str, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            if not name.strip():
                raise DataError(f"{dataset}: {str(path)!r} line {line_no} is {line!r}; expected '<wnid> <class name>'.")
            names[wnid] = name.strip()
    return names


def class_folders(directory: Path, dataset: str, hint: str) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders; files such as ``README.txt`` are skipped."""
    if not directory.is_dir():
        raise DataError(f"{dataset}: expected the image folder {str(directory)!r}; {hint}.")
    folders = sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{dataset}: {str(directory)!r} holds no class folders; {hint}.")
    return folders


def folder_images(directory: Path) -> list[Path]:
    """The (non-hidden) files of one class folder, in sorted order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def name_of(names: Mapping[str, str], wnid: str, dataset: str, source: Path) -> str:
    if wnid not in names:
        raise DataError(f"{dataset}: the folder {wnid!r} has no line in {str(source)!r}; use CoOp's classnames.txt "
                        f"(1000 lines '<wnid> <class name>').")
    return names[wnid]


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = IMAGENET.directory(cfg)
    images = IMAGENET.images(directory)
    hint = (f"extract ILSVRC2012 train into {str(images / 'train')!r} and the validation images, sorted into "
            f"<wnid> folders, into {str(images / 'val')!r} ({DOWNLOAD_HINT})")
    source = directory / "classnames.txt"
    names = read_classnames(source)
    wnids = class_folders(images / "train", "imagenet", hint)
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    classnames = [name_of(names, wnid, "imagenet", source) for wnid in wnids]
    train = [Datum(str(f), label, classnames[label]) for label, wnid in enumerate(wnids)
             for f in folder_images(images / "train" / wnid)]
    test = []
    for wnid in class_folders(images / "val", "imagenet", hint):
        if wnid not in label_of:
            raise DataError(f"imagenet: {str(images / 'val' / wnid)!r} has no matching train folder "
                            f"{str(images / 'train' / wnid)!r}; {hint}.")
        test += [Datum(str(f), label_of[wnid], classnames[label_of[wnid]]) for f in folder_images(images / "val" / wnid)]
    return IMAGENET.splits(cfg, train, [], test, classnames, directory,
                           {"split_file": None, "split": "images/train, test = images/val, val empty"})
