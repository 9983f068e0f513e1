"""Training without labels: the unlabeled set (inductive and transductive), which labels reach a method on that
path (none: the sentinel everywhere, and the same input whatever the true labels are), the config checks, the
report of assigned labels against the held-back truth, and the marking of transductive runs in the tables."""

from __future__ import annotations

import csv
import random

import pytest
import torch

from prompt_learning.data.datasets import build_dataset
from prompt_learning.data.types import Datum
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.stages import DataModuleStageData, assigned_label_accuracy
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import list_methods
from prompt_learning.protocols import build_task
from prompt_learning.protocols.unlabeled import UNLABELED, resolved_label_use, unlabeled_task
from prompt_learning.results import aggregate, write_outputs
from prompt_learning.run_spec import RunSpec


@pytest.fixture(scope="module")
def splits():
    return build_dataset({"name": "synthetic", "train_per_class": 3, "val_per_class": 2, "test_per_class": 2,
                          "image_size": 32})


def test_inductive_pool_is_every_training_image_of_the_training_classes_without_labels(splits) -> None:
    task = build_task("base2new", splits, 1, 1)
    free = unlabeled_task(task, splits, transductive=False)
    base = set(task.train_classes.names)
    expected = sorted(d.ref for d in splits.train if d.classname in base)
    assert sorted(d.ref for d in free.train) == expected and len(expected) == 3 * len(base)  # shots do not subsample
    assert all(d.label == UNLABELED and d.classname == "" for d in free.train)
    assert free.train_classes == task.train_classes and free.evals == task.evals
    assert free.ground_truth == {d.ref: d.classname for d in splits.train if d.classname in base}
    assert free.training_data == {"labels": False, "transductive": False, "images": len(expected),
                                  "classes": len(base)}
    assert [d.ref for d in free.train] != expected  # one fixed shuffled order: positions do not tell the class
    assert free.train == unlabeled_task(task, splits, transductive=False).train


def test_transductive_pool_covers_the_tested_classes_in_label_order(splits) -> None:
    task = build_task("base2new", splits, 1, 1)
    free = unlabeled_task(task, splits, transductive=True)
    assert free.train_classes.names == splits.classnames  # base + new, in the dataset's order
    assert len(free.train) == len(splits.train) and free.training_data["transductive"] is True
    for d in free.val:  # validation labels renumbered for the new class set
        assert free.train_classes.names[d.label] == d.classname
    assert [e.name for e in free.evals] == ["base", "new"]


def test_transductive_training_refuses_other_datasets_targets(splits) -> None:
    target = build_dataset({"name": "synthetic", "train_per_class": 1, "test_per_class": 1, "image_size": 32,
                            "render_seed": 3})
    target.name = "other"
    task = build_task("cross_dataset", splits, 1, 1, [target])
    with pytest.raises(ConfigurationError, match="dataset=<target> protocol=few_shot"):
        unlabeled_task(task, splits, transductive=True)


def test_a_method_sees_the_same_input_whatever_the_true_labels(splits) -> None:
    """Permute the true labels of the training images: the unlabeled set, its order and every label a method can
    read stay the same; only the held-back truth changes."""
    rng = random.Random(0)
    labels = [d.label for d in splits.train]
    rng.shuffle(labels)
    permuted = build_dataset({"name": "synthetic", "train_per_class": 3, "val_per_class": 2, "test_per_class": 2,
                              "image_size": 32})
    permuted.train = [Datum(d.ref, y, splits.classnames[y]) for d, y in zip(splits.train, labels, strict=True)]
    a = unlabeled_task(build_task("few_shot", splits, 1, 1), splits, transductive=False)
    b = unlabeled_task(build_task("few_shot", permuted, 1, 1), permuted, transductive=False)
    assert a.train == b.train and a.ground_truth != b.ground_truth
    dm = PromptDataModule(a, splits.load_image, lambda im: torch.zeros(3, 8, 8), lambda im: torch.zeros(3, 8, 8),
                          batch_size=4, eval_batch_size=5)
    data = DataModuleStageData(dm, torch.device("cpu"), shots=16)
    assert {d.label for d in data.train_items()} == {UNLABELED}
    for loader in (data.train_loader(), data.train_loader(augment=False), data.train_images(lambda im: torch.ones(1)),
                   data.augmented_pass(0)):
        assert {int(v) for _, y in loader for v in y} == {UNLABELED}


def test_a_label_that_is_read_by_cross_entropy_fails() -> None:
    with pytest.raises(IndexError):
        torch.nn.functional.cross_entropy(torch.randn(2, 3), torch.full((2,), UNLABELED))


def test_assigned_labels_are_scored_against_the_held_back_truth() -> None:
    names = ("cat", "dog", "owl")
    truth = {"a": "cat", "b": "dog", "c": "dog", "d": "owl"}
    items = [Datum("a", 0, "cat"), Datum("b", 0, "cat"), Datum("c", 1, "dog"), Datum("d", 1, "dog")]
    report = assigned_label_accuracy(items, truth, names)
    assert report == {"images": 4, "correct": 2, "accuracy": 50.0, "classes_with_images": 2, "classes": 3,
                      "fewest_per_class": 0}


def container(run_cfg, *overrides: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(run_cfg(*overrides), resolve=True)


def test_method_defaults_and_config_checks(run_cfg) -> None:
    methods = list_methods()
    assert resolved_label_use(methods["upl"], {}) == (True, False)
    assert resolved_label_use(methods["promptkd"], {}) == (True, True)
    assert resolved_label_use(methods["promptkd"], {"transductive": False}) == (True, False)
    assert resolved_label_use(methods["coop"], {}) == (False, False)
    with pytest.raises(ConfigurationError, match=r"data.unlabeled.*learns from the labels"):
        RunSpec.from_container(container(run_cfg, "method=coop", "data.unlabeled=true"))
    with pytest.raises(ConfigurationError, match="data.transductive"):
        RunSpec.from_container(container(run_cfg, "method=upl", "data.unlabeled=false", "data.transductive=true"))
    RunSpec.from_container(container(run_cfg, "method=upl", "data.transductive=true"))  # unlabeled by UPL's default


def record(method: str, seed: int, base: float, transductive: bool | None) -> dict:
    out = {"schema_version": 1, "method": method, "backbone": {"name": "ViT-B-16"}, "dataset": "dtd",
           "protocol": "base2new", "shots": 16, "seed": seed,
           "metrics": {"base": {"acc": base}, "new": {"acc": base - 10}}}
    return out if transductive is None else {**out, "transductive": transductive}


def test_transductive_rows_are_marked_and_never_averaged_with_inductive_ones(tmp_path) -> None:
    records = [record("promptkd", 1, 80.0, True), record("promptkd", 2, 82.0, True),
               record("promptkd", 1, 70.0, False), record("coop", 1, 60.0, None)]
    agg = aggregate(records)
    groups = {g.method: g.metrics["base"].mean for g in agg.groups}
    assert groups == {"promptkd [transductive]": 81.0, "promptkd": 70.0, "coop": 60.0}
    written = write_outputs(agg, tmp_path, plots=False)
    markdown = written[0].read_text()
    assert "promptkd [transductive]" in markdown and "not inductive results" in markdown
    rows = list(csv.DictReader(written[1].open()))
    assert {r["method"] for r in rows} == {"promptkd [transductive]", "promptkd", "coop"}
    assert "[transductive]" not in write_outputs(aggregate(records[2:]), tmp_path / "inductive", plots=False)[0] \
        .read_text()
