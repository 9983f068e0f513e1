"""Caltech101, OxfordPets, StanfordCars, Flowers102, Food101 on miniature trees in each real layout
(docs/datasets.md): split JSON read as stored, Dassl fallbacks, and errors that name the expected path."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from prompt_learning.config import compose_config
from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.datasets.caltech101 import CALTECH101
from prompt_learning.data.datasets.food101 import FOOD101
from prompt_learning.data.datasets.oxford_flowers import OXFORD_FLOWERS
from prompt_learning.data.datasets.oxford_pets import OXFORD_PETS
from prompt_learning.data.datasets.stanford_cars import STANFORD_CARS
from prompt_learning.errors import DataError

_buffer = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(_buffer, format="JPEG")
JPEG = _buffer.getvalue()

BENCHMARKS = {b.name: b for b in (CALTECH101, OXFORD_PETS, STANFORD_CARS, OXFORD_FLOWERS, FOOD101)}
# CoOp's CUSTOM_TEMPLATES, the class counts and sizes (docs/datasets.md) and the base / new counts (docs/protocols.md).
TEMPLATES = {"caltech101": "a photo of a {}.", "oxford_pets": "a photo of a {}, a type of pet.",
             "stanford_cars": "a photo of a {}.", "oxford_flowers": "a photo of a {}, a type of flower.",
             "food101": "a photo of {}, a type of food."}
COUNTS = {"caltech101": (100, (4128, 1649, 2465)), "oxford_pets": (37, (2944, 736, 3669)),
          "stanford_cars": (196, (6509, 1635, 8041)), "oxford_flowers": (102, (4093, 1633, 2463)),
          "food101": (101, (50500, 20200, 30300))}

# Per dataset: the split file's base folder (relative to the data root) and, per class, the name as stored in the
# JSON and a function giving the i-th image's path relative to that base, as in the real archives.
LAYOUTS = {
    "caltech101": ("caltech-101/101_ObjectCategories",
                   [("face", lambda i: f"Faces/image_{i:04d}.jpg"), ("Leopards", lambda i: f"Leopards/image_{i:04d}.jpg"),
                    ("accordion", lambda i: f"accordion/image_{i:04d}.jpg")]),
    "oxford_pets": ("oxford_pets/images",
                    [("abyssinian", lambda i: f"Abyssinian_{i}.jpg"), ("American_Bulldog", lambda i: f"american_bulldog_{i}.jpg"),
                     ("british_shorthair", lambda i: f"British_Shorthair_{i}.jpg")]),
    "stanford_cars": ("stanford_cars",
                      [("2012 Audi TTS Coupe", lambda i: f"cars_{'test' if i > 3 else 'train'}/{i:05d}.jpg"),
                       ("AM General Hummer SUV 2000", lambda i: f"cars_{'test' if i > 3 else 'train'}/{100 + i:05d}.jpg"),
                       ("2007 Acura RL Sedan", lambda i: f"cars_{'test' if i > 3 else 'train'}/{200 + i:05d}.jpg")]),
    "oxford_flowers": ("oxford_flowers/jpg",
                       [("pink primrose", lambda i: f"image_{i:05d}.jpg"), ("hard-leaved pocket orchid", lambda i: f"image_{10 + i:05d}.jpg"),
                        ("canterbury bells", lambda i: f"image_{20 + i:05d}.jpg")]),
    "food101": ("food-101/images",
                [("apple_pie", lambda i: f"apple_pie/{100 + i}.jpg"), ("baby_back_ribs", lambda i: f"baby_back_ribs/{200 + i}.jpg"),
                 ("beignets", lambda i: f"beignets/{300 + i}.jpg")]),
}
PER_SPLIT = {"train": (1, 2), "val": (3,), "test": (4, 5)}  # image indices of each class in each split


def jpeg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    return path


def cfg(root: Path | None, name: str, **extra) -> dict:
    return {"name": name, "root": None if root is None else str(root), "template": None, "split_seed": 0, **extra}


def split_tree(root: Path, name: str, skip_image: str | None = None) -> dict:
    """A real-schema ``split_zhou_*.json`` in the dataset folder, with its images (minus ``skip_image``)."""
    base, classes = LAYOUTS[name]
    split = {key: [[path(i), label, cls] for label, (cls, path) in enumerate(classes) for i in indices]
             for key, indices in PER_SPLIT.items()}
    for rel, _, _ in (row for rows in split.values() for row in rows):
        if rel != skip_image:
            jpeg(root / base / rel)
    directory = root / BENCHMARKS[name].folder
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BENCHMARKS[name].split_file).write_text(json.dumps(split))
    return split


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_split_file_is_read_as_stored(tmp_path, name):
    split = split_tree(tmp_path, name)
    data = build_dataset(cfg(tmp_path, name))
    base, classes = LAYOUTS[name]
    assert data.name == name
    assert data.classnames == tuple(cls for cls, _ in classes)  # never re-cleaned (e.g. "Leopards", "American_Bulldog")
    assert data.template == TEMPLATES[name]
    for key in ("train", "val", "test"):
        items = getattr(data, key)
        assert len(items) == len(split[key]) == 3 * len(PER_SPLIT[key])
        assert [(d.ref, d.label, d.classname) for d in items] == [(str(tmp_path / base / r), lab, c) for r, lab, c in split[key]]
    assert data.base_dir == str(tmp_path / BENCHMARKS[name].folder)
    assert data.info["split_file"] == str(tmp_path / BENCHMARKS[name].folder / BENCHMARKS[name].split_file)
    assert data.load_image(data.test[0].ref).size == (8, 8)
    assert build_dataset(cfg(tmp_path, name, template="{}")).template == "{}"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_constants_follow_the_spec_tables(name):
    bench = BENCHMARKS[name]
    assert (bench.template, (bench.n_classes, bench.sizes)) == (TEMPLATES[name], COUNTS[name])
    assert bench.split_file and bench.split_file.startswith("split_zhou_")
    assert bench.paths_relative_to_folder == (name == "stanford_cars")


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_config_composes_and_documents_the_template(name):
    dataset = compose_config([f"dataset={name}", "data.root=/data"]).dataset
    assert (dataset.name, dataset.root, dataset.template, dataset.split_seed) == (name, "/data", None, 0)
    text = (Path(__file__).parents[2] / "configs" / "dataset" / f"{name}.yaml").read_text()
    assert re.search(r'template: null\s+# "(.*)"', text).group(1) == TEMPLATES[name]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_missing_folder_is_named(tmp_path, name):
    expected = str(tmp_path / BENCHMARKS[name].folder)
    with pytest.raises(DataError, match=re.escape(repr(expected))):
        build_dataset(cfg(tmp_path, name))
    with pytest.raises(DataError, match="data root"):
        build_dataset(cfg(None, name))


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_missing_image_is_named(tmp_path, name):
    base, classes = LAYOUTS[name]
    missing = classes[1][1](4)
    split_tree(tmp_path, name, skip_image=missing)
    with pytest.raises(DataError, match=re.escape(repr(str(tmp_path / base / missing)))):
        build_dataset(cfg(tmp_path, name))


@pytest.mark.parametrize("name", ["stanford_cars", "oxford_flowers"])
def test_split_file_is_required_without_mat_support(tmp_path, name):
    bench = BENCHMARKS[name]
    (tmp_path / bench.folder / (bench.image_dir or "cars_train")).mkdir(parents=True)
    expected = str(tmp_path / bench.folder / bench.split_file)
    with pytest.raises(DataError, match=re.escape(repr(expected)) + ".*required"):
        build_dataset(cfg(tmp_path, name))


def test_caltech_fallback_drops_renames_and_splits_per_class(tmp_path):
    images = tmp_path / "caltech-101" / "101_ObjectCategories"
    for folder in ("BACKGROUND_Google", "Faces_easy", "Faces", "Leopards", "Motorbikes", "accordion", "airplanes"):
        for i in range(1, 11):
            jpeg(images / folder / f"image_{i:04d}.jpg")
    (images / "accordion" / ".DS_Store").write_text("")
    data = build_dataset(cfg(tmp_path, "caltech101"))
    # Python sorted order, capitals first; the two ignored folders dropped; the four renames applied.
    assert data.classnames == ("face", "leopard", "motorbike", "accordion", "airplane")
    assert (len(data.train), len(data.val), len(data.test)) == (25, 10, 15)  # 10 per class -> 5 / 2 / 3
    folders = ("Faces", "Leopards", "Motorbikes", "accordion", "airplanes")
    for d in data.train + data.val + data.test:
        assert Path(d.ref).parent.name == folders[d.label] and d.classname == data.classnames[d.label]
    assert data.template == "a photo of a {}." and data.info["split_file"] is None
    for label in range(5):
        refs = [d.ref for split in (data.train, data.val, data.test) for d in split if d.label == label]
        assert len(set(refs)) == 10
    again = build_dataset(cfg(tmp_path, "caltech101"))
    other = build_dataset(cfg(tmp_path, "caltech101", split_seed=1))
    assert [d.ref for d in again.train] == [d.ref for d in data.train] != [d.ref for d in other.train]


def test_caltech_fallback_names_missing_image_folder(tmp_path):
    (tmp_path / "caltech-101").mkdir()
    with pytest.raises(DataError, match=re.escape(repr(str(tmp_path / "caltech-101" / "101_ObjectCategories")))):
        build_dataset(cfg(tmp_path, "caltech101"))


def test_food_fallback_keeps_folder_names(tmp_path):
    images = tmp_path / "food-101" / "images"
    for folder in ("baby_back_ribs", "apple_pie"):
        for i in range(10):
            jpeg(images / folder / f"{1000 + i}.jpg")
    data = build_dataset(cfg(tmp_path, "food101"))
    assert data.classnames == ("apple_pie", "baby_back_ribs")
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)
    assert all(Path(d.ref).parent.name == data.classnames[d.label] for d in data.train + data.val + data.test)
    assert data.template == "a photo of {}, a type of food."


PETS = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("British_Shorthair", 3, 1)]  # stem prefix, class id, species


def pets_tree(root: Path) -> None:
    directory = root / "oxford_pets"
    lines = {"trainval": [], "test": []}
    for prefix, class_id, species in PETS:
        for i in range(1, 8):
            jpeg(directory / "images" / f"{prefix}_{i}.jpg")
            lines["trainval" if i <= 5 else "test"].append(f"{prefix}_{i} {class_id} {species} {class_id}")
    (directory / "annotations").mkdir()
    for key, rows in lines.items():
        (directory / "annotations" / f"{key}.txt").write_text("\n".join(rows) + "\n")


def test_pets_fallback_reads_official_lists(tmp_path):
    pets_tree(tmp_path)
    data = build_dataset(cfg(tmp_path, "oxford_pets"))
    assert data.classnames == ("abyssinian", "american_bulldog", "british_shorthair")
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)  # trainval 5 per class -> 4 / 1
    for d in data.train + data.val + data.test:
        stem = Path(d.ref).stem
        assert d.label == [p for p, _, _ in PETS].index(stem.rsplit("_", 1)[0]) and d.classname == data.classnames[d.label]
    assert {int(Path(d.ref).stem.rsplit("_", 1)[1]) for d in data.test} == {6, 7}
    assert data.template == "a photo of a {}, a type of pet."


def test_pets_fallback_names_missing_inputs(tmp_path):
    pets_tree(tmp_path)
    (tmp_path / "oxford_pets" / "annotations" / "test.txt").unlink()
    with pytest.raises(DataError, match=re.escape(repr(str(tmp_path / "oxford_pets" / "annotations" / "test.txt")))):
        build_dataset(cfg(tmp_path, "oxford_pets"))
    (tmp_path / "oxford_pets" / "annotations" / "test.txt").write_text("Abyssinian_6 1 1 1\n")
    (tmp_path / "oxford_pets" / "images" / "Abyssinian_6.jpg").unlink()
    with pytest.raises(DataError, match=re.escape(repr(str(tmp_path / "oxford_pets" / "images" / "Abyssinian_6.jpg")))):
        build_dataset(cfg(tmp_path, "oxford_pets"))
