"""The ImageNet domain-generalisation targets (docs/protocols.md, docs/datasets.md): test-only sets, ``train = val = []``.

* ImageNetV2 (``imagenetv2``): ``$DATA/imagenetv2/imagenetv2-matched-frequency-format-val/<0..999>/``; the
  folder number is the label and its name is line k of ``classnames.txt``.
* ImageNet-Sketch (``imagenet_sketch``): ``$DATA/imagenet-sketch/images/<wnid>/``; labels = sorted wnid order.
* ImageNet-A (``imagenet_a``): ``$DATA/imagenet-adversarial/imagenet-a/<wnid>/`` (200 folders, ``README.txt``
  ignored) and ImageNet-R (``imagenet_r``): ``$DATA/imagenet-rendition/imagenet-r/<wnid>/`` (200 folders): the
  class names are restricted to the wnids present and relabelled 0..199 in sorted wnid order, so predictions
  span only those classes.

Each reads its own copy of CoOp's ``classnames.txt`` (``<wnid> <name words>``) in its folder, as CoOp does; when
that copy is absent, ``$DATA/imagenet/classnames.txt`` is used. Files are listed in sorted order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prompt_learning.data.datasets.benchmark import DOWNLOAD_HINT, Benchmark
from prompt_learning.data.datasets.imagenet import (
    CLASSNAMES_HINT,
    class_folders,
    folder_images,
    name_of,
    read_classnames,
)
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import DataError

TEMPLATE = "a photo of a {}."
V2 = Benchmark(name="imagenetv2", folder="imagenetv2", image_dir="imagenetv2-matched-frequency-format-val",
               template=TEMPLATE, n_classes=1000, sizes=(0, 0, 10000))
SKETCH = Benchmark(name="imagenet_sketch", folder="imagenet-sketch", image_dir="images", template=TEMPLATE,
                   n_classes=1000, sizes=(0, 0, 50889))
A = Benchmark(name="imagenet_a", folder="imagenet-adversarial", image_dir="imagenet-a", template=TEMPLATE,
              n_classes=200, sizes=(0, 0, 7500))
R = Benchmark(name="imagenet_r", folder="imagenet-rendition", image_dir="imagenet-r", template=TEMPLATE,
              n_classes=200, sizes=(0, 0, 30000))


def classnames_file(bench: Benchmark, directory: Path) -> Path:
    """``<folder>/classnames.txt``, else ``<root>/imagenet/classnames.txt``."""
    own, shared = directory / "classnames.txt", directory.parent / "imagenet" / "classnames.txt"
    if own.is_file():
        return own
    if shared.is_file():
        return shared
    raise DataError(f"{bench.name}: no class-name file: expected {str(own)!r} (or ImageNet's {str(shared)!r}); "
                    f"{CLASSNAMES_HINT} into {str(directory)!r}.")


def _test_only(bench: Benchmark, cfg: Mapping[str, Any], test: list[Datum], classnames: list[str],
               directory: Path, source: Path) -> DatasetSplits:
    return bench.splits(cfg, [], [], test, classnames, directory,
                        {"split_file": None, "split": "test only", "test_only": True, "classnames_file": str(source)})


def _by_wnid(bench: Benchmark, cfg: Mapping[str, Any]) -> DatasetSplits:
    """Sketch, A and R: one folder per wnid; labels = rank of the sorted wnids present, names looked up by wnid."""
    directory = bench.directory(cfg)
    images = bench.images(directory)
    source = classnames_file(bench, directory)
    names = read_classnames(source, bench.name)
    wnids = class_folders(images, bench.name, f"extract the {bench.name} archive there ({DOWNLOAD_HINT})")
    classnames = [name_of(names, wnid, bench.name, source) for wnid in wnids]
    test = [Datum(str(f), label, classnames[label]) for label, wnid in enumerate(wnids)
            for f in folder_images(images / wnid)]
    return _test_only(bench, cfg, test, classnames, directory, source)


def build_v2(cfg: Mapping[str, Any]) -> DatasetSplits:
    directory = V2.directory(cfg)
    images = V2.images(directory)
    source = classnames_file(V2, directory)
    classnames = list(read_classnames(source, V2.name).values())
    folders = set(class_folders(images, V2.name, f"extract imagenetv2-matched-frequency.tar.gz there ({DOWNLOAD_HINT})"))
    expected = {str(k) for k in range(len(classnames))}
    if folders != expected:
        missing, extra = sorted(expected - folders, key=int), sorted(folders - expected)
        raise DataError(f"imagenetv2: {str(images)!r} must hold the folders 0..{len(classnames) - 1}, one per line of "
                        f"{str(source)!r}; missing {missing[:5]}, unexpected {extra[:5]}. Extract the "
                        f"matched-frequency archive there and use CoOp's classnames.txt ({DOWNLOAD_HINT}).")
    test = [Datum(str(f), label, name) for label, name in enumerate(classnames)
            for f in folder_images(images / str(label))]
    return _test_only(V2, cfg, test, classnames, directory, source)


def build_sketch(cfg: Mapping[str, Any]) -> DatasetSplits:
    return _by_wnid(SKETCH, cfg)


def build_a(cfg: Mapping[str, Any]) -> DatasetSplits:
    return _by_wnid(A, cfg)


def build_r(cfg: Mapping[str, Any]) -> DatasetSplits:
    return _by_wnid(R, cfg)
