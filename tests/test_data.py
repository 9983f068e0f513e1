"""Data: Dassl-identical few-shot sampling, base/new relabelling, the folder dataset and its errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.fewshot import few_shot_train_val
from prompt_learning.data.image_dataset import EpochSeededSampler, ImageDataset
from prompt_learning.data.splits import base_new_labels, subsample_classes
from prompt_learning.data.synthetic import CLASSNAMES, PRETRAIN_CLASSES, PRETRAIN_HELD_OUT
from prompt_learning.data.types import Datum
from prompt_learning.errors import DataError
from prompt_learning.protocols import build_task, harmonic_mean


def dassl_reference(items, shots, seed):
    """Independent transcription of Dassl: global ``random`` seeded once, train then val (min(K, 4))."""
    random.seed(seed)
    out = []
    for source, k in ((items[0], shots), (items[1], min(shots, 4))):
        tracker = {}
        for item in source:
            tracker.setdefault(item.label, []).append(item)
        chosen = []
        for group in tracker.values():
            chosen.extend(random.sample(group, k) if len(group) >= k else group)
        out.append(chosen)
    return out


def make_items(n_classes: int, per_class: list[int], prefix: str) -> list[Datum]:
    items = [Datum(f"{prefix}/{c}/{i}.jpg", c, f"class {c}") for c in range(n_classes) for i in range(per_class[c])]
    random.Random(7).shuffle(items)  # labels interleaved: first-occurrence order matters
    return items


@pytest.mark.parametrize("shots,seed", [(1, 1), (4, 2), (16, 3)])
def test_few_shot_matches_dassl(shots: int, seed: int) -> None:
    train = make_items(6, [20, 3, 16, 30, 1, 18], "train")
    val = make_items(6, [5, 5, 2, 6, 4, 5], "val")
    assert list(few_shot_train_val(train, val, shots, seed)) == dassl_reference((train, val), shots, seed)


def test_base_new_split_and_relabel() -> None:
    assert base_new_labels(47) == (list(range(24)), list(range(24, 47)))
    items = [Datum(f"{c}.jpg", c, f"c{c}") for c in range(5)]
    new = subsample_classes(items, [3, 4])
    assert [(d.ref, d.label) for d in new] == [("3.jpg", 0), ("4.jpg", 1)]
    assert harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)


def test_synthetic_dataset_is_deterministic_and_base2new_splits() -> None:
    splits = build_dataset({"name": "synthetic", "test_per_class": 2, "image_size": 32})
    assert splits.classnames == CLASSNAMES and len(CLASSNAMES) == 64
    assert len(PRETRAIN_CLASSES) == 48 and len(PRETRAIN_HELD_OUT) == 16
    first = torch.tensor(list(splits.load_image(splits.test[5].ref).getdata()))
    second = torch.tensor(list(splits.load_image(splits.test[5].ref).getdata()))
    assert torch.equal(first, second)
    task = build_task("base2new", splits, shots=4, seed=1)
    assert len(task.train_classes) == 32 and [len(e.classes) for e in task.evals] == [32, 32]
    assert len(task.train) == 32 * 4 and len(task.val) == 32 * 4
    assert task.evals[1].classes.names[0] == CLASSNAMES[32] and {d.label for d in task.evals[1].items} == set(range(32))


def write_tree(root, classes: dict[str, int], size: int = 8) -> None:
    for name, n in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (size, size), (i * 20 % 255, 0, 0)).save(root / name / f"img_{i}.jpg")


def test_folder_dataset_names_and_split(tmp_path) -> None:
    write_tree(tmp_path, {"golden_retriever": 10, "tabby_cat": 10, "zebra": 10})
    (tmp_path / "classnames.txt").write_text("zebra plains zebra\n")
    splits = build_dataset({"name": "folder", "root": str(tmp_path)})
    assert splits.classnames == ("golden retriever", "tabby cat", "plains zebra")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 6, 9)
    again = build_dataset({"name": "folder", "root": str(tmp_path)})
    assert [d.ref for d in again.test] == [d.ref for d in splits.test]
    other = build_dataset({"name": "folder", "root": str(tmp_path), "split_seed": 5})
    assert [d.ref for d in other.test] != [d.ref for d in splits.test]
    assert splits.load_image(splits.train[0].ref).mode == "RGB"


def test_folder_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist.*dataset.root="):
        build_dataset({"name": "folder", "root": str(tmp_path / "missing")})
    write_tree(tmp_path / "data", {"cat": 4})
    (tmp_path / "data" / "dog").mkdir()
    with pytest.raises(DataError, match="dog.*contains no images"):
        build_dataset({"name": "folder", "root": str(tmp_path / "data")})


def test_unreadable_image_is_named(tmp_path) -> None:
    write_tree(tmp_path, {"cat": 5, "dog": 5})
    broken = tmp_path / "dog" / "img_3.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="img_3.jpg"):
        build_dataset({"name": "folder", "root": str(tmp_path), "verify_images": True})
    splits = build_dataset({"name": "folder", "root": str(tmp_path), "verify_images": False})
    dataset = ImageDataset(splits.train + splits.val + splits.test, splits.load_image, lambda im: im)
    with pytest.raises(DataError, match="Cannot read image .*img_3.jpg.*class 'dog'"):
        for i in range(len(dataset)):
            dataset[i]


def test_epoch_seeded_sampler_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochSeededSampler(10, seed=1)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first and [i for i, _ in first] != [i for i, _ in second]
    assert sorted(i for i, _ in first) == list(range(10))


def test_folder_split_file_takes_names_and_labels_from_the_file(tmp_path) -> None:
    write_tree(tmp_path / "images", {"b_folder": 2, "a_folder": 2})
    split = {"train": [["b_folder/img_0.jpg", 0, "zebra"], ["a_folder/img_0.jpg", 1, "antelope"]],
             "val": [], "test": [["b_folder/img_1.jpg", 0, "zebra"], ["a_folder/img_1.jpg", 1, "antelope"]]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    splits = build_dataset({"name": "folder", "root": str(tmp_path / "images"),
                            "split_file": str(tmp_path / "split.json")})
    assert splits.classnames == ("zebra", "antelope")  # the file's label order, not the folders' sort order
    assert [(Path(d.ref).parent.name, d.label) for d in splits.test] == [("b_folder", 0), ("a_folder", 1)]
    split["test"][1][2] = "gazelle"
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match="label 1 is named both 'antelope' and 'gazelle'"):
        build_dataset({"name": "folder", "root": str(tmp_path / "images"), "split_file": str(tmp_path / "split.json")})


def test_short_classes_are_reported(tmp_path) -> None:
    train = make_items(3, [20, 3, 16], "train")
    val = make_items(3, [5, 5, 2], "val")
    from prompt_learning.data.types import DatasetSplits

    splits = DatasetSplits("toy", train, val, [], ("a", "b", "c"), "{}", load_image=lambda ref: None)
    with pytest.warns(UserWarning, match="1 of 3 classes have fewer than 16 training images"):
        task = build_task("few_shot", splits, shots=16, seed=1)
    assert task.dataset_info["fewest_train_images_per_class"] == 3
