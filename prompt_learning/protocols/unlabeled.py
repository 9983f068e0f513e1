"""Training without labels (``data.unlabeled``), optionally transductive (``data.transductive``); docs/protocols.md.

Any protocol's task can be turned into one whose training set is every image of the dataset's training split
over the classes trained on, each with the label :data:`UNLABELED` and no class name: the method never sees a
label on this path (UPL labels the images itself, PromptKD distils a teacher's predictions). The number of
shots does not subsample it: drawing K images per class would read the labels.

* inductive (the default): the images of the task's training classes only (base-to-new: the base classes);
* transductive: the images of every class the task tests on from this dataset (base-to-new: base and new), and
  the training class set is all of them, in the dataset's label order. Such runs say so in results.json
  (``transductive``) and the aggregated tables mark their rows: they are not inductive results.

The true class names of the unlabeled images are kept aside in ``Task.ground_truth`` for one report (the
accuracy of labels a method assigns, e.g. UPL's pseudo-labels); the validation split keeps its labels (it
measures, it does not train).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

from prompt_learning.classes import ClassSet
from prompt_learning.data.types import DatasetSplits, Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.protocols.base import Task
from prompt_learning.validation import Problems

POOL_ORDER_SEED = 0  # one fixed order of the unlabeled set, whatever the run seed (SGD reshuffles it anyway)
UNLABELED = -1
"""The label of every training image on the unlabeled path: a loss that reads it (cross-entropy) fails."""


def pool_classes(task: Task, splits: DatasetSplits, transductive: bool) -> ClassSet:
    """The classes whose training images form the unlabeled set: the training classes, or (transductive) every
    class of the eval sets drawn from this dataset, in the dataset's label order."""
    if not transductive:
        return task.train_classes
    foreign = [e.name for e in task.evals if e.load_image is not None]
    if foreign:
        raise ConfigurationError(f"data.transductive=true trains on the unlabeled training images of the classes "
                                 f"tested on, but the eval set(s) {foreign} come from other datasets. Run one "
                                 f"transductive run per target instead: dataset=<target> protocol=few_shot.")
    wanted = set(task.train_classes.names).union(*(e.classes.names for e in task.evals))
    names = tuple(n for n in splits.classnames if n in wanted)
    return ClassSet(names, splits.template, splits.name)


def unlabeled_task(task: Task, splits: DatasetSplits, transductive: bool) -> Task:
    """``task`` with its training set replaced by the unlabeled images of :func:`pool_classes` (in one fixed
    shuffled order: splits list images class by class) and its validation labels renumbered for the new class set."""
    classes = pool_classes(task, splits, transductive)
    index = {name: i for i, name in enumerate(classes.names)}
    pool = [d for d in splits.train if d.classname in index]
    random.Random(POOL_ORDER_SEED).shuffle(pool)  # splits list images class by class: the order would tell the class
    if not pool:
        raise ConfigurationError(f"Dataset {splits.name!r} has no training images of the classes "
                                 f"{list(classes.names)[:5]}; unlabeled training needs its training split.")
    val = [Datum(d.ref, index[d.classname], d.classname) for d in task.val if d.classname in index]
    training_data = {"labels": False, "transductive": transductive, "images": len(pool), "classes": len(classes)}
    return dataclasses.replace(task, train=[Datum(d.ref, UNLABELED, "") for d in pool], val=val,
                               train_classes=classes, training_data=training_data,
                               ground_truth={d.ref: d.classname for d in pool})


def resolved_label_use(method_cls: Any, data: Mapping[str, Any]) -> tuple[bool, bool]:
    """(unlabeled, transductive) of a run: ``data.unlabeled`` / ``data.transductive``, or where null the method's
    own defaults (``PromptMethod.unlabeled_train`` / ``transductive``)."""
    unlabeled = data.get("unlabeled")
    unlabeled = bool(method_cls.unlabeled_train if unlabeled is None else unlabeled)
    transductive = data.get("transductive")
    transductive = bool(method_cls.transductive if transductive is None else transductive)
    return unlabeled, transductive and unlabeled


def check_label_use(problems: Problems, method_cls: Any, data: Any) -> None:
    """Training without labels is for methods that do not read them; transductive training is unlabeled."""
    from prompt_learning.methods.base import METHODS  # the methods build on this package

    if not isinstance(data, Mapping):
        return
    if data.get("unlabeled") is True and method_cls.reads_labels:
        free = [n for n, m in METHODS.items().items() if not m.reads_labels]
        problems.add("data.unlabeled", True, "false with this method",
                     f"Method {method_cls.name!r} learns from the labels of its training images; training on "
                     f"unlabeled images is for {', '.join(free) or 'methods that do not read labels'}.")
    if data.get("transductive") is True and not resolved_label_use(method_cls, {**data, "transductive": None})[0]:
        problems.add("data.transductive", True, "false without data.unlabeled",
                     "Transductive training reads the images of the test classes without their labels: set "
                     "data.unlabeled=true too (with a method that does not read labels).")
