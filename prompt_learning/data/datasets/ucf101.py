"""UCF101 (Soomro et al., 2012): 101 human actions, one middle frame per video.

Layout: ``$DATA/ucf101/UCF-101-midframes/<Camel_Split_Action>/v_<Action>_gXX_cYY.jpg`` +
``$DATA/ucf101/split_zhou_UCF101.json`` (class names as stored in the JSON). Without the split file, Dassl's
fallback reads split 1 of ``$DATA/ucf101/ucfTrainTestlist/``: ``classInd.txt`` (``<1-based id> <Action>``),
``trainlist01.txt`` (split 80/20 into train / val per class) and ``testlist01.txt`` (test). The class name and
the frame folder are the CamelCase action split at capitals and joined by ``_`` (``ApplyEyeMakeup`` ->
``Apply_Eye_Makeup``); the frame file keeps the video's spelling with ``.jpg`` (``v_HandStandPushups_g08_c01.jpg``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark, split_trainval
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

UCF101 = Benchmark(name="ucf101", folder="ucf101", image_dir="UCF-101-midframes",
                   template="a photo of a person doing {}.", n_classes=101, split_file="split_zhou_UCF101.json",
                   sizes=(7639, 1898, 3783))
LISTS = "ucfTrainTestlist"


def clean_name(action: str) -> str:
    """``ApplyEyeMakeup`` -> ``Apply_Eye_Makeup``, ``YoYo`` -> ``Yo_Yo`` (Dassl's ``[A-Z][^A-Z]*`` split)."""
    return "_".join(re.findall("[A-Z][^A-Z]*", action))


def _lines(path: Path, directory: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"ucf101: neither the split file {str(directory / UCF101.split_file)!r} nor the list "
                        f"{str(path)!r} exists; download {UCF101.split_file} into {str(directory)!r}, or extract "
                        f"the official UCF101TrainTestSplits zip there as {LISTS}/ ({DOWNLOAD_HINT}).")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read(path: Path, directory: Path, images: Path, label_of: dict[str, int]) -> list[Datum]:
    items = []
    for line in _lines(path, directory):
        action, _, video = line.split(" ")[0].partition("/")
        if action not in label_of:
            raise DataError(f"ucf101: {str(path)!r} lists {line!r}, whose action {action!r} is not in "
                            f"{str(directory / LISTS / 'classInd.txt')!r}.")
        folder = clean_name(action)
        items.append(Datum(str(images / folder / (Path(video).stem + ".jpg")), label_of[action], folder))
    return items


def build(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = UCF101.directory(cfg)
    if (directory / UCF101.split_file).is_file():
        return UCF101.from_split_file(cfg)
    images = UCF101.images(directory)
    class_ind = directory / LISTS / "classInd.txt"
    label_of: dict[str, int] = {}
    for line in _lines(class_ind, directory):
        number, _, action = line.partition(" ")
        if not number.isdigit() or not action:
            raise DataError(f"ucf101: {str(class_ind)!r} has the line {line!r}; expected '<1-based id> <Action>'.")
        label_of[action.strip()] = int(number) - 1
    if sorted(label_of.values()) != list(range(len(label_of))):
        raise DataError(f"ucf101: the ids in {str(class_ind)!r} must be 1..{len(label_of)} without gaps.")
    classnames = [clean_name(a) for a, _ in sorted(label_of.items(), key=lambda kv: kv[1])]
    trainval = _read(directory / LISTS / "trainlist01.txt", directory, images, label_of)
    test = _read(directory / LISTS / "testlist01.txt", directory, images, label_of)
    train, val = split_trainval(trainval, 0.2, seed=int(cfg.get("split_seed", 0)))
    return UCF101.splits(cfg, train, val, test, classnames, directory,
                         {"split_file": None, "split": "trainlist01 80/20 train/val, testlist01 test"})
