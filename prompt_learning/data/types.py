"""Plain data records shared by datasets, protocols and the datamodule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Datum:
    """One labelled image: ``ref`` is a file path (or a synthetic reference), as in Dassl's Datum."""

    ref: str
    label: int
    classname: str


class ImageLoader(Protocol):
    def __call__(self, ref: str) -> Image.Image: ...


@dataclass
class DatasetSplits:
    """A dataset's train / val / test lists, class names in label order, and its hand-written template."""

    name: str
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: tuple[str, ...]
    template: str
    load_image: ImageLoader
    info: dict = field(default_factory=dict)  # e.g. where the split came from; recorded in results.json
    base_dir: str | None = None  # image paths are stored relative to it in few-shot index files
    generated_split: bool = False  # True: drawn here (not read from a file); runs save it for reuse
