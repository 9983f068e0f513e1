"""The run stages outside Lightning's fit loop: ``prepare``, a closed-form ``fit``, ``calibrate``, and the
training-view cache that lets text-only methods train on frozen features (``data.feature_cache``), and the class
names a method may read before fit (``offer_class_names``).

Each stage runs for a method that declares it (``PromptMethod.prepares`` / ``fits_in_closed_form`` /
``calibrates``) and returns the summary that results.json records under the stage's name. Each stage, and
each pass over the loaders it reads, shows its progress (:mod:`prompt_learning.progress`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.data.image_dataset import ImageDataset, InOrderSeededSampler
from prompt_learning.data.train_views import cached_train_views
from prompt_learning.data.types import Datum
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import PromptMethod
from prompt_learning.methods.stages import Batches
from prompt_learning.progress import Progress, Tracked, batch_size_of
from prompt_learning.protocols import Task

log = logging.getLogger(__name__)


def samples_in(loader: Any) -> int | None:
    """How many samples a pass over a DataLoader reads (its last incomplete batch dropped or not); None when
    it cannot tell."""
    try:
        batches, sampled = len(loader), len(loader.sampler)
    except (TypeError, AttributeError):
        return None
    return min(batches * loader.batch_size, sampled) if loader.batch_size else None


def tracked(loader: Any, description: str) -> Tracked:
    """``loader``'s batches, shown as progress in images (what, how many, rate, ETA) while a stage reads them."""
    return Tracked(loader, description, samples_in(loader), "img", count=batch_size_of)


class DataModuleStageData:
    """:class:`~prompt_learning.methods.stages.StageData` over the run's datamodule. ``label`` names the stage
    in the progress of its loaders (``coop prepare: training images``)."""

    def __init__(self, dm: PromptDataModule, device: torch.device, label: str = "", shots: int = -1) -> None:
        self.dm, self.device = dm, device
        self.train_classes = dm.task.train_classes
        self.shots = shots
        self.label = label

    def _describe(self, what: str) -> str:
        return f"{self.label}: {what}" if self.label else what.capitalize()

    def train_items(self) -> list[Datum]:
        return list(self.dm.task.train)

    def train_loader(self, augment: bool = True) -> Batches:
        if augment:
            return tracked(self.dm.train_dataloader(), self._describe("augmented training images"))
        return tracked(self.dm.train_eval_dataloader(), self._describe("training images"))

    def train_images(self, transform: Callable) -> Batches:
        return tracked(self.dm.train_eval_dataloader(transform), self._describe("training images"))

    def augmented_pass(self, index: int) -> Batches:
        dm = self.dm
        base = ((dm.seed * 1_000_003 + index) * 1_000_033 + 17) * 1_000_037  # apart from the SGD epochs' seeds
        loader = DataLoader(ImageDataset(dm.task.train, dm.load_image, dm.train_transform),
                            sampler=InOrderSeededSampler(len(dm.task.train), base), batch_size=dm.eval_batch_size,
                            num_workers=dm.num_workers)
        return tracked(loader, self._describe(f"augmented pass {index + 1} over the training images"))

    def val_loader(self) -> Batches | None:
        loaders = self.dm.val_dataloader()
        return tracked(loaders[0], self._describe("validation images")) if loaders else None

    def replace_train(self, items: Sequence[Datum]) -> None:
        if not items:
            raise ConfigurationError("A method's prepare stage replaced the training set with an empty one.")
        self.dm.task.train = list(items)


class ValidationOnly(DataModuleStageData):
    """What ``calibrate`` sees: the validation split; the training data is closed to it."""

    def train_items(self) -> list[Datum]:
        raise RuntimeError("calibrate reads the validation split only")

    def train_loader(self, augment: bool = True) -> Batches:
        raise RuntimeError("calibrate reads the validation split only")

    def augmented_pass(self, index: int) -> Batches:
        raise RuntimeError("calibrate reads the validation split only")

    def train_images(self, transform: Callable) -> Batches:
        raise RuntimeError("calibrate reads the validation split only")

    def replace_train(self, items: Sequence[Datum]) -> None:
        raise RuntimeError("only prepare may replace the training set")


def on_device(method: PromptMethod, device: torch.device) -> None:
    method.backbone.to(device)
    method.to(device)


@torch.no_grad()
def run_prepare(method: PromptMethod, dm: PromptDataModule, device: torch.device, shots: int = -1
                ) -> dict[str, Any] | None:
    """Stage 1: ``method.prepare`` before fit, without gradients. When it labels an unlabeled training set, the
    summary gains ``assigned_labels``: how many of those labels the held-back truth confirms."""
    if not method.prepares:
        return None
    on_device(method, device)
    log.info("Preparing %s", method.name)
    before = dm.task.train
    with Progress(f"{method.name} prepare"):
        summary = method.prepare(DataModuleStageData(dm, device, f"{method.name} prepare", shots))
    if dm.task.ground_truth and dm.task.train is not before:
        report = assigned_label_accuracy(dm.task.train, dm.task.ground_truth, dm.task.train_classes.names)
        log.info("%s labelled %d training images; %.2f%% of those labels are right", method.name, report["images"],
                 report["accuracy"])
        summary = {**(summary or {}), "assigned_labels": report}
    return summary


def assigned_label_accuracy(items: Sequence[Datum], truth: dict[str, str], names: Sequence[str]) -> dict[str, Any]:
    """How many labels a method gave the unlabeled training images match their true class (``truth``: ref -> name);
    the ground truth is read here, for this report only."""
    right = sum(1 for d in items if truth.get(d.ref) == names[d.label])
    per_class = Counter(names[d.label] for d in items)
    return {"images": len(items), "correct": right, "accuracy": round(100.0 * right / max(len(items), 1), 4),
            "classes_with_images": len(per_class), "classes": len(names),
            "fewest_per_class": min((per_class.get(n, 0) for n in names), default=0)}


def run_closed_form_fit(method: PromptMethod, dm: PromptDataModule, device: torch.device) -> dict[str, Any]:
    """Stage 2 for methods with their own fit (the linear probe): ``method.fit`` on the run's data."""
    on_device(method, device)
    with Progress(f"{method.name} fit"):
        return method.fit(DataModuleStageData(dm, device, f"{method.name} fit"))


def run_calibrate(method: PromptMethod, dm: PromptDataModule, device: torch.device) -> dict[str, Any] | None:
    """Stage 3: ``method.calibrate`` after fit, on the validation split only."""
    if not method.calibrates:
        return None
    on_device(method, device)
    method.eval()
    with Progress(f"{method.name} calibrate"):
        return method.calibrate(ValidationOnly(dm, device, f"{method.name} calibrate"))


def weights_have_identity(backbone: FrozenCLIP) -> bool:
    """True for weights named by a tag or a checkpoint hash: a reproducible identity that may key a disk
    cache (random weights never have one)."""
    identity = backbone.identity()
    return identity.get("pretrained") is not None or identity.get("checkpoint_sha256") is not None


def feature_cache_identity(backbone: FrozenCLIP) -> dict[str, Any]:
    """What keys a disk cache of frozen image features: the weights' identity and the dtype they run in."""
    return {**backbone.identity(), "weights_dtype": str(backbone.image_dtype())}


def train_views_for(views: int, method: PromptMethod, world_size: int) -> int:
    """K of ``data.feature_cache.train_views`` when this method can train on cached view features, else 0
    (with a warning saying why the cache is ignored)."""
    if views == 0:
        return 0
    reason = None
    if not method.trainable or method.fits_in_closed_form:
        reason = "it is not trained by gradient descent on augmented images"
    elif method.touches_image_tower:
        reason = "it prompts the image tower, so image features change during training"
    elif type(method).forward is not PromptMethod.forward:
        reason = "its forward computes more from the images than their features (e.g. frozen-feature targets)"
    elif world_size > 1:
        reason = "the cache is single-process (trainer.devices=1)"
    if reason is not None:
        log.warning("data.feature_cache.train_views=%d is ignored for method %r: %s; training on images.", views,
                    method.name, reason)
        return 0
    return views


def prepare_train_views(method: PromptMethod, dm: PromptDataModule, views: int, device: torch.device) -> None:
    """Encode (or read from the cache) ``views`` augmented views of every training image and make the
    datamodule serve (feature, label) batches. On disk only for named weights with the cache on."""
    on_device(method, device)
    identity, cache_dir = None, None
    if dm.eval_cache_dir and weights_have_identity(method.backbone):
        identity = feature_cache_identity(method.backbone)
        cache_dir = Path(dm.eval_cache_dir).parent / "train_views"
    log.info("Training %s on %d cached augmented views of %d images", method.name, views, len(dm.task.train))
    features, _ = cached_train_views(method.encode_images, identity, dm.task.train, dm.load_image,
                                     dm.train_transform, views, dm.seed, cache_dir, device, dm.eval_batch_size,
                                     dm.num_workers)  # (K, N, D)
    dm.use_train_views(features)


def evaluated_class_names(task: Task) -> ClassSet:
    """Every class name the task evaluates on the training dataset, the training classes first, then each such
    eval set's other names in order (base-to-new: base + new), with the training set's template and dataset.
    Other datasets' eval sets (cross-dataset and domain-generalisation targets) are left out: their names stay
    unseen, as in MoCoOp's official code, which only reads its own dataset's class list."""
    names = dict.fromkeys(task.train_classes.names)
    for eval_set in task.evals:
        if eval_set.classes.dataset == task.train_classes.dataset:
            names.update(dict.fromkeys(eval_set.classes.names))
    return ClassSet(tuple(names), task.train_classes.template, task.train_classes.dataset)


def offer_class_names(method: PromptMethod, task: Task) -> dict[str, Any]:
    """Before fit: a trainable method that declares ``uses_unseen_names_in_training`` receives every class name
    the run evaluates (names, never images). Returns what results.json records: ``saw_unseen_class_names`` (true
    when names beyond the training classes were given; the tables mark such runs) and how many names."""
    if not (method.uses_unseen_names_in_training and method.trainable):
        return {"saw_unseen_class_names": False}
    names = evaluated_class_names(task)
    method.receive_class_names(names)
    unseen = len(names) - len(task.train_classes)
    if unseen:
        log.info("%s trains with the names of %d classes it is tested on but not trained on (not their images)",
                 method.name, unseen)
    return {"saw_unseen_class_names": unseen > 0,
            "class_names_in_training": {"names": len(names), "unseen": unseen}}
