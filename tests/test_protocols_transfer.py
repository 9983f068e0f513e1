"""Dassl few-shot parity and index files, cross-dataset / DG protocols, CSV data, data checks and the
decoded-image cache, on miniature trees in the benchmarks' real layouts."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from prompt_learning.config import compose_config
from prompt_learning.data.checks import check_dataset
from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.eval_cache import decoded_images, split_preprocess
from prompt_learning.engine.run import train_and_test
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.protocols import build_task
from prompt_learning.results import aggregate, load_results
from prompt_learning.results.aggregate import to_markdown

LAYOUTS = {  # dataset -> (image folder under the data root, split file)
    "dtd": ("dtd/images", "dtd/split_zhou_DescribableTextures.json"),
    "food101": ("food-101/images", "food-101/split_zhou_Food101.json"),
    "caltech101": ("caltech-101/101_ObjectCategories", "caltech-101/split_zhou_Caltech101.json"),
}


def jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_tree(root: Path, dataset: str, classes: list[str], per_split: tuple[int, int, int] = (6, 3, 2)) -> None:
    """Images + a split_zhou JSON ([relative path, label, class name]) in the dataset's real layout."""
    image_dir, split_file = LAYOUTS[dataset]
    split = {"train": [], "val": [], "test": []}
    for label, name in enumerate(classes):
        folder = root / image_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        i = 0
        for key, n in zip(split, per_split, strict=True):
            for _ in range(n):
                (folder / f"{name}_{i:04d}.jpg").write_bytes(jpeg((40 * label % 255, 20 * i % 255, 90)))
                split[key].append([f"{name}/{name}_{i:04d}.jpg", label, name])
                i += 1
    (root / split_file).write_text(json.dumps(split))


def dassl_few_shot(items, shots: int, seed: int):
    """Dassl's generate_fewshot_dataset, written independently: global random seeded once, classes in
    first-occurrence order, random.sample per class (all items when fewer than K)."""
    random.seed(seed)
    by_label: dict = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    out = []
    for group in by_label.values():
        out += random.sample(group, shots) if len(group) >= shots else group
    return out, random


def real_data_cfg(tmp_path: Path, *overrides: str):
    """Fast test settings for datasets read from disk (the run_cfg fixture's are synthetic-specific)."""
    return compose_config(["backbone=tiny_test", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                           "shots=2", "logger=none", "data.batch_size=4", f"paths.output_dir={tmp_path / 'out'}",
                           *overrides])


@pytest.fixture
def data_root(tmp_path) -> Path:
    make_tree(tmp_path, "dtd", ["banded", "blotchy", "braided", "bubbly", "bumpy"])
    make_tree(tmp_path, "food101", ["apple_pie", "baklava", "churros"])
    make_tree(tmp_path, "caltech101", ["accordion", "airplane", "anchor", "ant"])
    return tmp_path


def test_few_shot_subset_matches_dassl_and_is_indexed(data_root: Path) -> None:
    splits = build_dataset({"name": "dtd", "root": str(data_root)})
    shuffled = splits.train[::-1]  # first-occurrence order matters: reverse the list to exercise it
    splits.train = shuffled
    task = build_task("few_shot", splits, shots=4, seed=2)
    expected_train, rng = dassl_few_shot(shuffled, 4, 2)
    by_label: dict = {}
    for item in splits.val:
        by_label.setdefault(item.label, []).append(item)
    expected_val = [x for g in by_label.values() for x in (rng.sample(g, 4) if len(g) >= 4 else g)]  # 3 < min(K, 4)
    assert [d.ref for d in task.train] == [d.ref for d in expected_train]
    assert [d.ref for d in task.val] == [d.ref for d in expected_val]
    index = data_root / "dtd" / "split_fewshot" / "shot_4-seed_2.json"
    stored = json.loads(index.read_text())
    assert stored["train"] == [str(Path(d.ref).relative_to(data_root / "dtd")) for d in task.train]
    assert len(task.dataset_info["few_shot_index_sha256"]) == 64
    # an existing index is used as is (shared by every method), even when sampling would differ
    stored["train"] = stored["train"][::-1]
    index.write_text(json.dumps(stored))
    again = build_task("few_shot", build_dataset({"name": "dtd", "root": str(data_root)}), shots=4, seed=2)
    assert [d.ref for d in again.train] == [d.ref for d in task.train][::-1]
    stored["train"][0] = "banded/not_there.jpg"
    index.write_text(json.dumps(stored))
    with pytest.raises(DataError, match="Delete .*shot_4-seed_2.json"):
        build_task("few_shot", build_dataset({"name": "dtd", "root": str(data_root)}), shots=4, seed=2)
    (data_root / "dtd" / "split_zhou_DescribableTextures.json").unlink()  # now the fallback split: another source
    with pytest.raises(DataError, match="another train/val split"):
        build_task("few_shot", build_dataset({"name": "dtd", "root": str(data_root)}), shots=4, seed=2)


def test_cross_dataset_task_tests_targets_with_their_own_classes(data_root: Path) -> None:
    source = build_dataset({"name": "dtd", "root": str(data_root)})
    targets = [build_dataset({"name": n, "root": str(data_root)}) for n in ("food101", "caltech101")]
    task = build_task("cross_dataset", source, shots=2, seed=1, targets=targets)
    assert [e.name for e in task.evals] == ["dtd", "food101", "caltech101"]
    assert task.evals[1].classes.names == ("apple_pie", "baklava", "churros")
    assert task.evals[1].classes.template == "a photo of {}, a type of food."
    assert len(task.evals[2].items) == 4 * 2 and task.needs_unseen_classes and task.targets == ["food101", "caltech101"]
    with pytest.raises(ConfigurationError, match="protocol.targets"):
        build_task("cross_dataset", source, shots=2, seed=1)


def test_cross_dataset_run_end_to_end(data_root: Path) -> None:
    cfg = real_data_cfg(data_root, "dataset=dtd", f"data.root={data_root}", "protocol=cross_dataset",
                        "protocol.targets=[food101,caltech101]", f"data.cache_dir={data_root / 'cache'}")
    record = train_and_test(cfg)
    assert set(record["metrics"]) == {"dtd", "food101", "caltech101"}
    assert record["source"] == "dtd" and record["targets"] == ["food101", "caltech101"]
    mean = (record["metrics"]["food101"]["acc"] + record["metrics"]["caltech101"]["acc"]) / 2
    assert abs(record["target_mean"] - mean) < 1e-9
    assert record["classes"] == {"train": 5, "dtd": 5, "food101": 3, "caltech101": 4}
    assert len(list((data_root / "cache").glob("*.npy"))) == 3  # one decoded array per dataset, not one of all
    assert json.loads((Path(cfg.paths.run_dir) / "results.json").read_text())["protocol"] == "cross_dataset"
    agg = aggregate(load_results(data_root / "out"))  # the results aggregate
    table = to_markdown(agg)
    assert "Cross-dataset" in table and "food101" in table.lower() and "caltech101" in table.lower()


@pytest.mark.parametrize("method", ["linear_probe", "coop"])
def test_methods_that_cannot_transfer_are_refused(data_root: Path, method: str) -> None:
    extra = ["method.class_specific=true"] if method == "coop" else []
    cfg = real_data_cfg(data_root, "dataset=dtd", f"data.root={data_root}", "protocol=cross_dataset", "protocol.targets=[food101]",
                  f"method={method}", *extra)
    with pytest.raises(ConfigurationError, match="protocol=few_shot"):
        train_and_test(cfg)


def test_test_only_dataset_cannot_be_the_source(tmp_path: Path) -> None:
    wnids = ["n01440764", "n01443537"]
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("".join(f"{w} fish {i}\n" for i, w in enumerate(wnids)))
    for w in wnids:
        folder = tmp_path / "imagenet-adversarial" / "imagenet-a" / w
        folder.mkdir(parents=True)
        (folder / "0.jpg").write_bytes(jpeg((1, 2, 3)))
    splits = build_dataset({"name": "imagenet_a", "root": str(tmp_path)})
    with pytest.raises(ConfigurationError, match="test-only"):
        build_task("few_shot", splits, shots=1, seed=1)


def test_csv_dataset_with_and_without_split_column(tmp_path: Path) -> None:
    rows = ["path,label,split"]
    for c, name in enumerate(["red kite", "barn owl"]):
        for i in range(6):
            (tmp_path / f"{c}_{i}.jpg").write_bytes(jpeg((100 * c, 10 * i, 5)))
            rows.append(f"{c}_{i}.jpg,{name},{'train' if i < 3 else 'val' if i < 4 else 'test'}")
    (tmp_path / "with.csv").write_text("\n".join(rows) + "\n")
    splits = build_dataset({"name": "csv", "file": str(tmp_path / "with.csv")})
    assert splits.classnames == ("barn owl", "red kite") and (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 4)
    assert not splits.generated_split
    (tmp_path / "without.csv").write_text("\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    cfg = real_data_cfg(tmp_path, "dataset=csv", f"dataset.file={tmp_path / 'without.csv'}", "protocol=few_shot")
    train_and_test(cfg)
    saved = json.loads((Path(cfg.paths.run_dir) / "dataset_split.json").read_text())  # reusable split
    assert sum(len(saved[k]) for k in ("train", "val", "test")) == 12 and saved["train"][0][0].endswith(".jpg")
    (tmp_path / "bad.csv").write_text("path,label\nmissing.jpg,owl\n")
    with pytest.raises(DataError, match="missing.jpg"):
        build_dataset({"name": "csv", "file": str(tmp_path / "bad.csv")})
    with pytest.raises(DataError, match="dataset.label_column"):
        (tmp_path / "cols.csv").write_text("file,label\n")
        build_dataset({"name": "csv", "file": str(tmp_path / "cols.csv")})


def test_data_check_reports_counts_and_problems(data_root: Path) -> None:
    report = check_dataset({"name": "dtd", "root": str(data_root)}, shots=16)
    assert report.ok
    text = "\n".join(report.lines())
    assert "5 classes, the published dataset has 47" in text and "fewer than 16 training images" in text
    (data_root / "dtd" / "images" / "bumpy" / "bumpy_0000.jpg").unlink()
    with pytest.raises(DataError, match="bumpy_0000.jpg"):
        check_dataset({"name": "dtd", "root": str(data_root)})
    with pytest.raises(DataError, match="data.root"):
        check_dataset({"name": "dtd", "root": None})


def test_decoded_images_are_cached_and_bitwise_equal(tiny_backbone, data_root: Path, tmp_path: Path) -> None:
    splits = build_dataset({"name": "dtd", "root": str(data_root)})
    refs = sorted(d.ref for d in splits.test)
    pil_stage, tensor_stage = split_preprocess(tiny_backbone.preprocess_eval)
    calls = []

    def counting_loader(ref: str):
        calls.append(ref)
        return splits.load_image(ref)

    cache = tmp_path / "cache"
    first = decoded_images(refs, counting_loader, pil_stage, cache, "dtd")
    second = decoded_images(refs, counting_loader, pil_stage, cache, "dtd")
    assert len(calls) == len(refs) and len(list(cache.glob("*.npy"))) == 1  # decoded once
    for i, ref in enumerate(refs):
        expected = tiny_backbone.preprocess_eval(splits.load_image(ref))
        assert torch.equal(tensor_stage(torch.from_numpy(second[i].copy())), expected)
    assert (first == second).all()


def test_paper_table_multirun_through_the_cli_then_aggregates(tmp_path: Path, train_cli) -> None:
    """scripts/train.py with sweep=base2new_all on a generated DTD tree: a Hydra multirun over seeds
    whose end prints and writes the aggregated table."""
    make_tree(tmp_path / "data", "dtd", ["banded", "blotchy", "braided", "bubbly"])
    code, out, err = train_cli(
        "sweep=base2new_all", "backbone=tiny_test",
        f"data.root={tmp_path / 'data'}", "hydra.sweeper.params.dataset=dtd", "hydra.sweeper.params.seed='1,2'",
        "trainer.max_epochs=1", "shots=2", "logger=none", "trainer.enable_progress_bar=false",
        f"paths.output_dir={tmp_path / 'out'}")
    assert code == 0, out[-2000:] + err[-2000:]
    runs = sorted((tmp_path / "out" / "base2new" / "dtd" / "coop" / "tiny_test" / "shots_2").rglob("results.json"))
    assert [p.parent.name.split("-")[0] for p in runs] == ["seed_1", "seed_2"]  # seed_<s>-<config hash>
    (table_file,) = (tmp_path / "out" / "sweeps").glob("*/aggregate/aggregate.md")  # the sweep's own table
    table = table_file.read_text()
    assert "coop" in table and "dtd" in table.lower()
    assert "average of 1 datasets" in out
