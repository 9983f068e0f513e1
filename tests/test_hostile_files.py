"""Hostile inputs (issue 17, classes 2 and 3): every file format the project reads, and the class lists of the
library API, refuse what does not fit their schema with one message naming the file, the entry and the fix;
images are converted to RGB faithfully (checked by pixel values) or refused; nothing ends in a library traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from prompt_learning import FrozenCLIP, PromptedCLIP, create_method, save_export
from prompt_learning.classes import ClassSet
from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.fewshot_index import cached_few_shot, index_path, pool_digest
from prompt_learning.data.image_dataset import ImageDataset
from prompt_learning.data.split_files import read_split_file
from prompt_learning.data.types import Datum
from prompt_learning.engine.bookkeeping import resume_checkpoint
from prompt_learning.errors import DataError, FormatError
from prompt_learning.export.io import write_export
from prompt_learning.export.predict import predict_files, read_classnames
from prompt_learning.formats import load_rgb
from prompt_learning.results import AggregationWarning, load_results

from .conftest import CLASSES


def images(root: Path, counts: dict[str, int]) -> None:
    """``root/<folder>/img_<i>.png``: small distinct RGB images."""
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 30 % 255, len(folder) * 20 % 255, 90)).save(root / folder / f"img_{i}.png")


def refused(match: str, call, *args, **kwargs) -> str:
    """The one-line message of the FormatError ``call`` raises, checked against ``match`` (a regex)."""
    with pytest.raises(FormatError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert re.search(match, message), message
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------------------------- class lists (class 2)

def test_two_folders_given_one_class_name_are_refused_naming_both(tmp_path: Path) -> None:
    images(tmp_path, {"cat": 5, "kitty": 5, "dog": 5})
    # a byte-order mark and a blank line are fine; two folders named alike are not
    (tmp_path / "classnames.txt").write_text("\ufeffcat Cat\n\nkitty cat\n", encoding="utf-8")
    refused(r"'cat' is given twice, at folder 'cat' \(classnames.txt line 1\) and at folder 'kitty' "
            r"\(classnames.txt line 3\).*Rename or merge", build_dataset, {"name": "folder", "root": str(tmp_path)})
    (tmp_path / "classnames.txt").write_text("\ufeffcat Tabby cat\n\n", encoding="utf-8")
    splits = build_dataset({"name": "folder", "root": str(tmp_path)})
    assert splits.classnames == ("Tabby cat", "dog", "kitty")
    (tmp_path / "classnames.txt").write_text("cat Tabby cat\nzebra Plains zebra\n")
    refused(rf"{re.escape(str(tmp_path / 'classnames.txt'))}: line 2: names folder 'zebra', which is not a class "
            r"folder.*fix the line or remove it", build_dataset, {"name": "folder", "root": str(tmp_path)})
    (tmp_path / "classnames.txt").write_text("cat\n")
    refused(r"line 1: expected '<folder> <class name>', got 'cat'", build_dataset,
            {"name": "folder", "root": str(tmp_path)})


def test_class_lists_with_empty_or_alike_names_are_refused_everywhere(coop_export: Path,
                                                                       tiny_backbone: FrozenCLIP) -> None:
    refused(r"the class list: the class name 'Red_Star' is given twice, at position 0 and at position 2 \('red star' "
            r"and 'Red_Star' read the same in a prompt\)", ClassSet, ("red star", "blue ring", "Red_Star"))
    refused(r"the class list of 'pets': the class name at position 1 is empty \(' _ '\)", ClassSet,
            ("cat", " _ "), dataset="pets")
    assert len(ClassSet(tuple(open_clip.IMAGENET_CLASSNAMES), dataset="imagenet")) == 1000  # the published list
    model = PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    pixels = torch.zeros(1, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    refused(r"'cat' is given twice, at position 0 and at position 2", model.predict, pixels, ["cat", "dog", "cat"])
    refused(r"position 1 is 3, not text", model.predict, pixels, ["cat", 3])
    refused(r"classnames='cat,dog, Dog': the class name 'Dog' is given twice, at item 2 and at item 3",
            read_classnames, "cat,dog, Dog")
    listing = coop_export.parent / "classes.txt"
    listing.write_text("\ufeffcat\n\ndog\ncat\n", encoding="utf-8")
    refused(rf"{re.escape(str(listing))}: the class name 'cat' is given twice, at line 1 and at line 4",
            read_classnames, str(listing))
    listing.write_text("\ufeffcat\n\ndog\n", encoding="utf-8")
    assert read_classnames(str(listing)) == ["cat", "dog"]
    deep, depth = listing.parent / "deep.png", listing.parent / "depth.tif"  # prediction converts as training does
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(deep)
    Image.new("F", (8, 8), 0.5).save(depth)
    rows, skipped = predict_files(model, [deep, depth], ["cat", "dog"], show_progress=False)
    assert [row[0] for row in rows] == [str(deep)] and "floating-point" in skipped[0][1]
    with Image.open(deep) as raw:  # a 16-bit PIL image handed to the API is scaled too, not clipped
        assert torch.equal(model.logits([raw], ["cat", "dog"]), model.logits([load_rgb(str(deep))], ["cat", "dog"]))


def test_an_empty_label_cell_and_other_broken_csv_rows_name_the_line(tmp_path: Path) -> None:
    images(tmp_path, {"cat": 4, "dog": 4})
    rows = [f"{c}/img_{i}.png,{c}" for c in ("cat", "dog") for i in range(4)]
    csv_file = tmp_path / "images.csv"

    def build(*lines: str, header: str = "path,label", **cfg):
        csv_file.write_text("\n".join([header, *lines]) + "\n")
        return build_dataset({"name": "csv", "file": str(csv_file), **cfg})

    where = re.escape(str(csv_file))
    refused(rf"{where}: line 4: the 'label' cell is empty", build, *rows[:2], "dog/img_0.png,", *rows[2:])
    refused(rf"{where}: line 3: 3 cell\(s\) where the header has 2", build, rows[0], rows[1] + ",extra", *rows[2:])
    refused(rf"{where}: line 2: 1 cell\(s\) where the header has 2", build, "cat/img_0.png", *rows[1:])
    refused(rf"{where}: line 1: no column 'label' in the header.*dataset.label_column", build, *rows,
            header="path,class")
    refused(rf"{where}: line 10: image '.*cat/img_0.png' is listed again \(first on line 2\)", build, *rows,
            "./cat/img_0.png,cat")
    refused(rf"{where}: line 10: image '.*cat/img_9.png' does not exist \(1 of 9 listed images are missing\); "
            r"paths are relative to", build, *rows, "cat/img_9.png,cat")
    refused(rf"{where}: the class name 'cat' is given twice, at label 'Cat' \(first on line 10\) and at label "
            r"'cat' \(first on line 2\) \('Cat' and 'cat' read the same", build, *rows, "cat/other.png,Cat")
    names = tmp_path / "names.txt"
    names.write_text("0 tabby cat\n1 dog\n0 house cat\n")
    refused(rf"{re.escape(str(names))}: line 3: integer label '0' is given a name again \(first on line 1\)",
            build, *[r.replace(",cat", ",0").replace(",dog", ",1") for r in rows], classnames_file=str(names))
    csv_file.write_bytes("path,label\ncat/img_0.png,chat noir\n".encode("latin-1") + "cat/img_1.png,caf\xe9\n"
                         .encode("latin-1"))
    refused(rf"{where}: line 3: the CSV file is not UTF-8 text \(byte 0xe9\).*CSV UTF-8",
            build_dataset, {"name": "csv", "file": str(csv_file)})
    excel = "\ufeffpath,label,notes\n" + "\n".join(f"{r},  some note " for r in rows) + "\n"  # BOM, extra column
    csv_file.write_text(excel, encoding="utf-8")
    splits = build_dataset({"name": "csv", "file": str(csv_file), "split_fractions": [0.5, 0.25]})
    assert splits.classnames == ("cat", "dog") and len(splits.train + splits.val + splits.test) == 8


# ---------------------------------------------------------------------------------------------- images (class 2)

def test_images_are_converted_faithfully_or_refused(tmp_path: Path) -> None:
    levels = np.array([[0, 257, 128 * 257, 65535], [1000, 30000, 50000, 65280]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")  # 16-bit greyscale: PIL's convert("RGB") clips it at 255
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    rgb = np.asarray(load_rgb(str(tmp_path / "deep.png")))
    assert rgb.shape == (2, 4, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[..., 0].tolist() == [[0, 1, 128, 255], [4, 117, 195, 254]]
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 200, 30, 10])
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "icon.png", transparency=0)  # pixel 0 transparent (it hides black)
    assert np.asarray(load_rgb(str(tmp_path / "icon.png"))).tolist() == [[[255, 255, 255], [200, 30, 10]]]
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "print.jpg", quality=100)
    assert np.abs(np.asarray(load_rgb(str(tmp_path / "print.jpg"))).astype(int) - [255, 0, 0]).max() <= 2
    frames = [Image.new("RGB", (4, 4), (250, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(load_rgb(str(tmp_path / "anim.gif")))[0, 0].tolist() == [250, 0, 0]  # the first frame
    Image.new("F", (4, 4), 0.5).save(tmp_path / "depth.tif")
    refused(r"Cannot read image '.*depth.tif': its pixels are floating-point \(mode F\).*8- or 16-bit PNG",
            load_rgb, str(tmp_path / "depth.tif"))
    item = Datum(str(tmp_path / "depth.tif"), 0, "depth")
    refused(r"depth.tif.*floating-point", ImageDataset([item], load_rgb, lambda image: image).decode, 0)
    images(tmp_path / "data", {"a": 5, "b": 5})
    Image.new("F", (8, 8), 0.5).save(tmp_path / "data" / "b" / "img_9.tif")
    refused(r"data/b/img_9.tif': its pixels are floating-point", build_dataset,
            {"name": "folder", "root": str(tmp_path / "data")})


# ------------------------------------------------------------------------------------------- split files (class 3)

def test_split_files_are_checked_entry_by_entry(tmp_path: Path) -> None:
    path = tmp_path / "split.json"

    def read(content) -> None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        read_split_file(path, tmp_path)

    good = {"train": [["a/1.jpg", 0, "cat"], ["b/1.jpg", 1, "dog"]], "val": [], "test": [["a/2.jpg", 0, "cat"]]}
    where = re.escape(str(path))
    refused(rf"{where}: expected an object {{\"train\": \[...\], \"val\": \[...\], \"test\": \[...\]}}, got a list",
            read, [good["train"]])
    refused(rf"{where}: unknown key 'tset' \(did you mean 'test'\?\); the keys of this file are train, val, test",
            read, {"train": good["train"], "val": [], "tset": good["test"]})
    refused(rf"{where}: missing key\(s\) 'val'", read, {"train": good["train"], "test": good["test"]})
    refused(rf"{where}: train\[1\]: expected \[relative image path, integer label, class name\], got a list of 2",
            read, {**good, "train": [good["train"][0], ["b/1.jpg", 1]]})
    refused(rf"{where}: test\[0\]: label: expected an integer >= 0, got a string \"0\"", read,
            {**good, "test": [["a/2.jpg", "0", "cat"]]})
    refused(rf"{where}: test\[0\]: label: expected an integer >= 0, got a boolean true", read,
            {**good, "test": [["a/2.jpg", True, "cat"]]})
    refused(rf"{where}: val: expected a list of .* entries, got an object", read, {**good, "val": {}})
    refused(rf"{where}: the class name 'Cat' is given twice, at label 0 \(train\[0\]\) and at label 1 \(train\[1\]\)",
            read, {**good, "train": [good["train"][0], ["b/1.jpg", 1, "Cat"]]})
    refused(rf"{where}: line 1, column \d+: the split file is not valid JSON.*cut short", read,
            json.dumps(good)[:27])
    path.write_bytes(b'{"train": [["caf\xe9.jpg", 0, "cat"]],\n "val": [], "test": []}')
    refused(rf"{where}: line 1: the split file is not UTF-8", read_split_file, path, tmp_path)


def test_few_shot_index_is_checked(tmp_path: Path) -> None:
    pool = [Datum(str(tmp_path / f"c{c}" / f"{i}.jpg"), c, f"class {c}") for c in range(2) for i in range(3)]
    path = index_path(tmp_path, 1, 1)
    path.parent.mkdir(parents=True)
    source = pool_digest(pool, pool[:2], tmp_path)

    def use(content) -> None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        cached_few_shot(tmp_path, 1, 1, pool, pool[:2], lambda: (pool[:1], pool[:1]))

    where = re.escape(str(path))
    refused(rf"{where}: line 1, column 12: the few-shot index is not valid JSON.*cut short.*Delete .* to sample",
            use, '{"train": [')
    refused(rf"{where}: train\[1\]: expected an image path relative to the dataset directory, got an integer 3",
            use, {"source_split": source, "train": ["c0/0.jpg", 3], "val": []})
    refused(rf"{where}: unknown key 'trian' \(did you mean 'train'\?\)", use,
            {"source_split": source, "trian": [], "val": []})
    refused(rf"{where}: train\[1\]: 'c0/0.jpg' is listed twice \(first at train\[0\]\)", use,
            {"source_split": source, "train": ["c0/0.jpg", "c0/0.jpg"], "val": []})


# ----------------------------------------------------------------------------------------- exports (class 3)

@pytest.fixture
def coop_export(tiny_backbone: FrozenCLIP, tmp_path: Path) -> Path:
    torch.manual_seed(0)
    method = create_method({"name": "coop", "ctx_init": "a photo of a"}, tiny_backbone, CLASSES)
    save_export(tmp_path / "export", method)
    return tmp_path / "export"


def test_prompt_config_is_checked_against_its_schema(coop_export: Path, tiny_backbone: FrozenCLIP) -> None:
    path = coop_export / "prompt_config.json"
    original = path.read_text()
    config = json.loads(original)
    where = re.escape(str(path))

    def load(content) -> None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)

    refused(rf"{where}: line \d+, column \d+: the export config is not valid JSON.*cut short.*export the prompts",
            load, original[: len(original) // 2])
    refused(rf"{where}: unknown key 'clasnames' \(did you mean 'classnames'\?\)", load,
            {**config, "clasnames": config["classnames"]})
    refused(rf"{where}: expected a JSON object, got a list", load, [config])
    refused(rf"{where}: backbone.model_name: expected an open_clip model name, got null\.", load,
            {**config, "backbone": {**config["backbone"], "model_name": None}})
    refused(rf"{where}: classnames: expected a list of class names, got a string", load,
            {**config, "classnames": "red star, blue ring"})
    refused(rf"{where}: the class name at classnames\[2\] is empty", load,
            {**config, "classnames": ["red star", "blue ring", "", "moon"]})
    refused(rf"{where}: the class name 'blue ring' is given twice, at classnames\[1\] and at classnames\[3\]", load,
            {**config, "classnames": ["red star", "blue ring", "green cross", "blue ring"]})
    path.write_text(original)
    model = PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)
    other = coop_export.parent / "other"  # the writer keeps to the same schema, and writes nothing it would refuse
    refused(r"other/prompt_config.json: unknown key 'extra'", write_export, other, model.method.export_tensors(),
            {**model.export_config(), "extra": 1})
    assert not other.exists()


def test_prompt_tensors_of_the_wrong_kind_are_refused(coop_export: Path, tiny_backbone: FrozenCLIP) -> None:
    path = coop_export / "prompts.safetensors"
    tensors = load_file(path)
    where = re.escape(str(path))

    def load(**changes: torch.Tensor) -> None:
        save_file({**tensors, **changes}, path)
        PromptedCLIP.from_pretrained(coop_export, backbone=tiny_backbone)

    ctx = tensors["context.ctx"]
    refused(rf"{where}: tensor 'context.ctx' has dtype int64; learned prompts are floating point", load,
            **{"context.ctx": ctx.long()})
    refused(rf"{where}: tensor 'context.ctx' holds NaN or infinite values", load,
            **{"context.ctx": torch.full_like(ctx, float("nan"))})
    refused(rf"{where}: Tensor 'context.ctx' has shape \(7, 64\).*expects \(4, 64\)", load,
            **{"context.ctx": torch.zeros(7, 64)})
    load(**{"context.ctx": ctx.half()})  # a float16 copy loads (cast to the method's dtype)


# --------------------------------------------------------------------------- results and checkpoints (class 3)

def test_results_files_that_are_not_records_are_skipped_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps([{"method": "coop"}]))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text('{"method": "coop", "metrics": {')
    with pytest.warns(AggregationWarning) as caught, pytest.raises(DataError, match="2 skipped"):
        load_results(tmp_path)
    messages = "\n".join(str(w.message) for w in caught)
    assert re.search(r"a/results.json: expected a JSON object \(a run's record\), got a list", messages), messages
    assert re.search(r"b/results.json: line 1, column 32: the results file is not valid JSON.*cut short", messages)


def test_a_damaged_checkpoint_names_the_file_and_the_way_out(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"prompt_learning": {"fingerprint": "x"}, "state_dict": {"w": torch.zeros(64)}}, last)
    last.write_bytes(last.read_bytes()[:200])  # cut short, as by a killed run
    refused(rf"Cannot read the checkpoint '{re.escape(str(last))}' \(.*\)\. Pass resume=false to start over in "
            rf"{re.escape(str(tmp_path))}, or delete", resume_checkpoint, True, tmp_path, {})
    torch.save([1, 2], last)
    refused(r"last.ckpt: expected a Lightning checkpoint .*, got list\. Pass resume=false", resume_checkpoint, True,
            tmp_path, {})
    assert resume_checkpoint(False, tmp_path, {}) is None  # resume=false never reads it
