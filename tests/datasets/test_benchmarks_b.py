"""FGVCAircraft, SUN397, EuroSAT, UCF101, ImageNet and its four variants on miniature trees in each real layout
(tiny real JPEGs, real-schema split JSONs, real class-name sources): names, labels, split sizes, templates and
the DataErrors for missing folders and files (docs/datasets.md, docs/protocols.md)."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.types import DatasetSplits
from prompt_learning.errors import DataError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "dataset"
_buffer = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(_buffer, format="JPEG")
JPEG = _buffer.getvalue()


def jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG)
    return path


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def build(name: str, root: Path, **extra) -> DatasetSplits:
    return build_dataset({"name": name, "root": str(root), "template": None, "split_seed": 0, **extra})


def labels(items) -> Counter:
    return Counter(d.label for d in items)


def rel(items, base: Path) -> list[str]:
    return [str(Path(d.ref).relative_to(base)) for d in items]


def split_json(path: Path, rows: dict[str, list[tuple[str, int, str]]]) -> None:
    path.write_text(json.dumps({k: [list(r) for r in rows.get(k, [])] for k in ("train", "val", "test")}))


# ---------------------------------------------------------------------------------------------- FGVC-Aircraft
VARIANTS = ["707-320", "A300B4", "Cessna 172"]


def aircraft_tree(root: Path) -> Path:
    d = root / "fgvc_aircraft"
    write(d / "variants.txt", VARIANTS)
    image_id = 1000000
    for split, per_class in (("train", 3), ("val", 2), ("test", 1)):
        lines = []
        for variant in VARIANTS:
            for _ in range(per_class):
                jpg(d / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}")
                image_id += 1
        write(d / f"images_variant_{split}.txt", lines)
    return d


def test_fgvc_aircraft_official_lists(tmp_path: Path) -> None:
    d = aircraft_tree(tmp_path)
    data = build("fgvc_aircraft", tmp_path)
    assert data.classnames == tuple(VARIANTS)  # variants.txt line order = labels, spaces kept
    assert (len(data.train), len(data.val), len(data.test)) == (9, 6, 3)
    assert labels(data.train) == {0: 3, 1: 3, 2: 3} and labels(data.test) == {0: 1, 1: 1, 2: 1}
    cessna = [d_ for d_ in data.train if d_.label == 2]
    assert {x.classname for x in cessna} == {"Cessna 172"}
    assert rel(data.train[:1], d) == ["images/1000000.jpg"]
    assert data.template == "a photo of a {}, a type of aircraft."
    assert data.info["split_file"] is None


def test_fgvc_aircraft_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "fgvc_aircraft"))):
        build("fgvc_aircraft", tmp_path)
    d = aircraft_tree(tmp_path)
    write(d / "images_variant_val.txt", ["1000099 Boeing 999"])
    with pytest.raises(DataError, match="Boeing 999.*variants.txt"):
        build("fgvc_aircraft", tmp_path)
    (d / "variants.txt").unlink()
    with pytest.raises(DataError, match=re.escape(str(d / "variants.txt")) + ".*fgvc-aircraft-2013b"):
        build("fgvc_aircraft", tmp_path)


# ---------------------------------------------------------------------------------------------------- SUN397
SUN_CATEGORIES = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]


def sun_tree(root: Path, n_train: int = 5, n_test: int = 2) -> Path:
    d = root / "sun397"
    write(d / "ClassName.txt", SUN_CATEGORIES)
    for name, n in (("Training_01.txt", n_train), ("Testing_01.txt", n_test)):
        lines = []
        for c, category in enumerate(SUN_CATEGORIES):
            for i in range(n):
                line = f"{category}/sun_{name[:4].lower()}{c}{i:03d}.jpg"
                jpg(d / "SUN397" / line.lstrip("/"))
                lines.append(line)
        write(d / name, lines)
    return d


def test_sun397_fallback_partitions(tmp_path: Path) -> None:
    d = sun_tree(tmp_path)
    data = build("sun397", tmp_path)
    assert data.classnames == ("abbey", "outdoor apartment_building", "shop bakery")
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)  # Training_01 80/20 per class
    assert labels(data.train) == {0: 4, 1: 4, 2: 4} and labels(data.val) == {0: 1, 1: 1, 2: 1}
    assert {x.classname for x in data.test if x.label == 1} == {"outdoor apartment_building"}
    assert set(rel(data.train + data.val, d / "SUN397")) == {
        f"{c.lstrip('/')}/sun_trai{i}{j:03d}.jpg" for i, c in enumerate(SUN_CATEGORIES) for j in range(5)}
    assert data.template == "a photo of a {}."
    again = build("sun397", tmp_path)
    assert again.train == data.train and again.val == data.val  # split_seed fixes the fallback split


def test_sun397_split_json_names_as_stored(tmp_path: Path) -> None:
    d = sun_tree(tmp_path)
    split_json(d / "split_zhou_SUN397.json", {
        "train": [("a/abbey/sun_trai0000.jpg", 0, "abbey"), ("b/bakery/shop/sun_trai2000.jpg", 1, "shop bakery")],
        "val": [("a/abbey/sun_trai0001.jpg", 0, "abbey")],
        "test": [("b/bakery/shop/sun_test2000.jpg", 1, "shop bakery")]})
    data = build("sun397", tmp_path)
    assert data.classnames == ("abbey", "shop bakery")
    assert (len(data.train), len(data.val), len(data.test)) == (2, 1, 1)
    assert data.train[1].ref == str(d / "SUN397" / "b/bakery/shop/sun_trai2000.jpg")


def test_sun397_missing_partitions_name_split_and_fix(tmp_path: Path) -> None:
    d = sun_tree(tmp_path)
    (d / "Testing_01.txt").unlink()
    with pytest.raises(DataError) as info:
        build("sun397", tmp_path)
    message = str(info.value)
    assert str(d / "split_zhou_SUN397.json") in message and str(d / "Testing_01.txt") in message
    assert "Partitions.zip" in message


# --------------------------------------------------------------------------------------------------- EuroSAT
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "SeaLake"]


def eurosat_tree(root: Path, image_dir: str = "2750", per_class: int = 10) -> Path:
    d = root / "eurosat"
    for folder in EUROSAT_FOLDERS:
        for i in range(per_class):
            jpg(d / image_dir / folder / f"{folder}_{i + 1}.jpg")
    return d


def test_eurosat_fallback_renames_and_per_class_split(tmp_path: Path) -> None:
    eurosat_tree(tmp_path)
    data = build("eurosat", tmp_path)
    assert data.classnames == ("Annual Crop Land", "Forest", "Sea or Lake")
    assert (len(data.train), len(data.val), len(data.test)) == (15, 6, 9)  # 50 / 20 / 30 per class
    assert labels(data.train) == {0: 5, 1: 5, 2: 5} and labels(data.test) == {0: 3, 1: 3, 2: 3}
    assert {x.classname for x in data.val if x.label == 2} == {"Sea or Lake"}
    assert data.template == "a centered satellite photo of {}."


def test_eurosat_split_json_names_as_stored(tmp_path: Path) -> None:
    d = eurosat_tree(tmp_path)
    split_json(d / "split_zhou_EuroSAT.json", {
        "train": [("AnnualCrop/AnnualCrop_1.jpg", 0, "Annual Crop Land"), ("SeaLake/SeaLake_1.jpg", 1, "SeaLake")],
        "test": [("Forest/Forest_1.jpg", 1, "SeaLake")]})
    data = build("eurosat", tmp_path)
    assert data.classnames == ("Annual Crop Land", "SeaLake")  # never re-cleaned
    assert (len(data.train), len(data.val), len(data.test)) == (2, 0, 1)


def test_eurosat_rgb_folder_must_be_renamed(tmp_path: Path) -> None:
    d = eurosat_tree(tmp_path, "EuroSAT_RGB", per_class=1)
    with pytest.raises(DataError) as info:
        build("eurosat", tmp_path)
    message = str(info.value)
    assert str(d / "2750") in message and "EuroSAT_RGB" in message and "ln -s EuroSAT_RGB 2750" in message
    (d / "EuroSAT_RGB").rename(d / "other")
    with pytest.raises(DataError, match=re.escape(str(d / "2750"))):
        build("eurosat", tmp_path)


# ---------------------------------------------------------------------------------------------------- UCF101
UCF_ACTIONS = ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
UCF_FILES = {"ApplyEyeMakeup": "ApplyEyeMakeup", "HandstandPushups": "HandStandPushups", "YoYo": "YoYo"}


def ucf_tree(root: Path, n_train: int = 5, n_test: int = 2) -> Path:
    d = root / "ucf101"
    lists = d / "ucfTrainTestlist"
    write(lists / "classInd.txt", [f"{i + 1} {a}" for i, a in enumerate(UCF_ACTIONS)])
    folders = {"ApplyEyeMakeup": "Apply_Eye_Makeup", "HandstandPushups": "Handstand_Pushups", "YoYo": "Yo_Yo"}
    for name, groups, with_label in (("trainlist01.txt", range(8, 8 + n_train), True),
                                     ("testlist01.txt", range(1, 1 + n_test), False)):
        lines = []
        for i, action in enumerate(UCF_ACTIONS):
            for g in groups:
                video = f"v_{UCF_FILES[action]}_g{g:02d}_c01"
                jpg(d / "UCF-101-midframes" / folders[action] / f"{video}.jpg")
                lines.append(f"{action}/{video}.avi" + (f" {i + 1}" if with_label else ""))
        write(lists / name, lines)
    return d


def test_ucf101_fallback_split_one(tmp_path: Path) -> None:
    d = ucf_tree(tmp_path)
    data = build("ucf101", tmp_path)
    assert data.classnames == ("Apply_Eye_Makeup", "Handstand_Pushups", "Yo_Yo")  # underscores kept
    assert (len(data.train), len(data.val), len(data.test)) == (12, 3, 6)  # trainlist01 80/20 per class
    assert labels(data.val) == {0: 1, 1: 1, 2: 1}
    assert "Handstand_Pushups/v_HandStandPushups_g01_c01.jpg" in rel(data.test, d / "UCF-101-midframes")
    assert data.template == "a photo of a person doing {}."


def test_ucf101_split_json_and_missing_frame(tmp_path: Path) -> None:
    d = ucf_tree(tmp_path)
    split_json(d / "split_zhou_UCF101.json", {
        "train": [("Yo_Yo/v_YoYo_g08_c01.jpg", 0, "Yo_Yo")],
        "val": [("Yo_Yo/v_YoYo_g09_c01.jpg", 0, "Yo_Yo")],
        "test": [("Apply_Eye_Makeup/v_ApplyEyeMakeup_g01_c01.jpg", 1, "Apply Eye Makeup")]})
    data = build("ucf101", tmp_path)
    assert data.classnames == ("Yo_Yo", "Apply Eye Makeup")
    (d / "UCF-101-midframes" / "Yo_Yo" / "v_YoYo_g09_c01.jpg").unlink()
    with pytest.raises(DataError, match="1 of 3 images.*v_YoYo_g09_c01.jpg"):
        build("ucf101", tmp_path)
    (d / "split_zhou_UCF101.json").unlink()
    (d / "ucfTrainTestlist" / "classInd.txt").unlink()
    with pytest.raises(DataError) as info:
        build("ucf101", tmp_path)
    assert str(d / "ucfTrainTestlist" / "classInd.txt") in str(info.value)
    assert str(d / "split_zhou_UCF101.json") in str(info.value)


# -------------------------------------------------------------------------------------------------- ImageNet
CLASSNAMES = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
              ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray")]


def classnames_txt(path: Path, entries=CLASSNAMES) -> Path:
    return write(path, [f"{w} {n}" for w, n in entries])


def imagenet_tree(root: Path, wnids=("n01484850", "n01440764", "n01443537")) -> Path:
    d = root / "imagenet"
    classnames_txt(d / "classnames.txt")
    for wnid in wnids:
        for i in (3, 1, 2):
            jpg(d / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        for i in (2, 1):
            jpg(d / "images" / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG")
    return d


def test_imagenet_train_and_val_as_test(tmp_path: Path) -> None:
    d = imagenet_tree(tmp_path)
    data = build("imagenet", tmp_path)
    assert data.classnames == ("tench", "goldfish", "great white shark")  # sorted wnid rank, name by wnid
    assert (len(data.train), len(data.val), len(data.test)) == (9, 0, 6)  # val left empty on purpose
    assert labels(data.test) == {0: 2, 1: 2, 2: 2}
    assert rel(data.train[:3], d / "images") == [f"train/n01440764/n01440764_{i}.JPEG" for i in (1, 2, 3)]
    assert data.test[0].ref == str(d / "images/val/n01440764/ILSVRC2012_val_n01440764_1.JPEG")
    assert data.template == "a photo of a {}."


def test_imagenet_errors(tmp_path: Path) -> None:
    d = imagenet_tree(tmp_path)
    jpg(d / "images" / "val" / "n09999999" / "x.JPEG")
    with pytest.raises(DataError, match="n09999999.*no matching train folder"):
        build("imagenet", tmp_path)
    classnames_txt(d / "classnames.txt", CLASSNAMES[1:])
    with pytest.raises(DataError, match="'n01440764' has no line in"):
        build("imagenet", tmp_path)
    (d / "classnames.txt").unlink()
    with pytest.raises(DataError, match=re.escape(str(d / "classnames.txt")) + ".*CoOp's classnames.txt"):
        build("imagenet", tmp_path)
    classnames_txt(d / "classnames.txt")
    (d / "images" / "val").rename(d / "images" / "validation")
    with pytest.raises(DataError, match=re.escape(str(d / "images" / "val")) + ".*<wnid> folders"):
        build("imagenet", tmp_path)


def test_imagenetv2_folder_number_is_label(tmp_path: Path) -> None:
    d = tmp_path / "imagenetv2"
    classnames_txt(d / "classnames.txt", CLASSNAMES[:3])
    images = d / "imagenetv2-matched-frequency-format-val"
    for k in range(3):
        for i in range(k + 1):
            jpg(images / str(k) / f"{k}{i}abc.jpeg")
    data = build("imagenetv2", tmp_path)
    assert data.classnames == ("tench", "goldfish", "great white shark")
    assert data.train == [] and data.val == [] and labels(data.test) == {0: 1, 1: 2, 2: 3}
    assert data.info["test_only"] and data.template == "a photo of a {}."
    (d / "classnames.txt").unlink()  # falls back to ImageNet's copy (same 3 lines)
    classnames_txt(tmp_path / "imagenet" / "classnames.txt", CLASSNAMES[:3])
    assert build("imagenetv2", tmp_path).classnames == data.classnames
    (tmp_path / "imagenet" / "classnames.txt").unlink()
    with pytest.raises(DataError) as info:
        build("imagenetv2", tmp_path)
    assert str(d / "classnames.txt") in str(info.value) and str(tmp_path / "imagenet" / "classnames.txt") in str(info.value)
    classnames_txt(d / "classnames.txt", CLASSNAMES[:4])
    with pytest.raises(DataError, match=r"folders 0..3.*missing \['3'\]"):
        build("imagenetv2", tmp_path)


def test_imagenet_sketch_sorted_wnid_labels(tmp_path: Path) -> None:
    d = tmp_path / "imagenet-sketch"
    classnames_txt(d / "classnames.txt", CLASSNAMES[::-1])  # file order must not matter
    for wnid, _ in CLASSNAMES[:4]:
        for i in range(2):
            jpg(d / "images" / wnid / f"sketch_{i}.JPEG")
    data = build("imagenet_sketch", tmp_path)
    assert data.classnames == ("tench", "goldfish", "great white shark", "tiger shark")
    assert data.train == [] and data.val == [] and labels(data.test) == {0: 2, 1: 2, 2: 2, 3: 2}
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "elsewhere" / "imagenet-sketch"))):
        build("imagenet_sketch", tmp_path / "elsewhere")


@pytest.mark.parametrize(("name", "folder", "image_dir"), [("imagenet_a", "imagenet-adversarial", "imagenet-a"),
                                                          ("imagenet_r", "imagenet-rendition", "imagenet-r")])
def test_imagenet_a_r_restricted_to_present_classes(tmp_path: Path, name: str, folder: str, image_dir: str) -> None:
    d = tmp_path / folder
    classnames_txt(d / "classnames.txt")  # 6 lines, only 3 wnids present
    present = [CLASSNAMES[5][0], CLASSNAMES[1][0], CLASSNAMES[3][0]]
    for n, wnid in enumerate(present):
        for i in range(n + 1):
            jpg(d / image_dir / wnid / f"{i}.jpg")
    write(d / image_dir / "README.txt", ["not a class"])
    data = build(name, tmp_path)
    assert data.classnames == ("goldfish", "tiger shark", "electric ray")  # sorted wnids, relabelled 0..2
    assert labels(data.test) == {0: 2, 1: 3, 2: 1}
    assert {x.classname for x in data.test if x.label == 2} == {"electric ray"}
    assert data.train == [] and data.val == [] and data.template == "a photo of a {}."
    (d / image_dir).rename(d / "other")
    with pytest.raises(DataError, match=re.escape(str(d / image_dir))):
        build(name, tmp_path)


def test_template_override(tmp_path: Path) -> None:
    aircraft_tree(tmp_path)
    assert build("fgvc_aircraft", tmp_path, template="itap of a {}.").template == "itap of a {}."


# ----------------------------------------------------------------------------------------------------- configs
TEMPLATES = {"fgvc_aircraft": "a photo of a {}, a type of aircraft.", "sun397": "a photo of a {}.",
             "eurosat": "a centered satellite photo of {}.", "ucf101": "a photo of a person doing {}.",
             "imagenet": "a photo of a {}.", "imagenetv2": "a photo of a {}.", "imagenet_sketch": "a photo of a {}.",
             "imagenet_a": "a photo of a {}.", "imagenet_r": "a photo of a {}."}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_config_names_dataset_and_template(name: str) -> None:
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert text.startswith("# ") and "$DATA/" in text.splitlines()[0]
    assert f"\nname: {name}\n" in text and "root: ${data.root}" in text
    assert f'template: null              # "{TEMPLATES[name]}"' in text


def test_configs_compose() -> None:
    from prompt_learning.config import compose_config

    for name in TEMPLATES:
        cfg = compose_config([f"dataset={name}", "data.root=/data"])
        assert cfg.dataset.name == name and cfg.dataset.root == "/data" and cfg.dataset.template is None
        assert cfg.dataset.split_seed == 0 and cfg.dataset.train_transform == "random_resized_crop"
