"""What a method sees in the run stages outside the SGD loop: ``prepare``, a closed-form ``fit`` and
``calibrate`` (see :class:`~prompt_learning.methods.base.PromptMethod`), and what it returns to own the SGD
stage's optimisation (:class:`Optimization`).

The engine hands each of those stages a :class:`StageData`: the run's training and validation data as
loaders, on the device the run uses. The validation split is the only held-out data a stage may read;
the test sets are never offered before evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.data.types import Datum

if TYPE_CHECKING:
    from prompt_learning.methods.base import PromptMethod

Batches = Iterable[tuple[Tensor, Tensor]]  # (B, 3, H, W) images, (B,) labels


@dataclass
class Optimization:
    """A method's own optimisation for the SGD stage (``PromptMethod.configure_optimization``): its optimizer
    (parameter groups included), an optional learning-rate scheduler stepped per ``interval`` ("epoch" or
    "step"), and an optional gradient-norm limit applied after ``after_backward`` and before each step."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # a torch.optim.lr_scheduler instance, or None
    interval: str = "epoch"
    max_grad_norm: float | None = None


class StageData(Protocol):
    """The data of one run, as a stage may read it."""

    train_classes: ClassSet
    device: torch.device
    shots: int  # the run's shots (-1: every image); on the unlabeled path the images a method may select per class

    def train_items(self) -> list[Datum]:
        """The training set (after any replacement by ``replace_train``)."""
        ...

    def train_loader(self, augment: bool = True) -> Batches:
        """Training batches: shuffled and augmented as in SGD training (``augment=True``), or in order through
        the eval transform (``augment=False``, e.g. to extract frozen features)."""
        ...

    def train_images(self, transform: Callable) -> Batches:
        """The training images in order through ``transform`` (e.g. another backbone's eval preprocessing)."""
        ...

    def augmented_pass(self, index: int) -> Batches:
        """Pass ``index`` over the training images in their order (batches line up across passes), through the
        run's augmentation (``PromptMethod.augmentation``), drawn from (run seed, pass, image position): the
        same pass gives the same views in every run with this seed."""
        ...

    def val_loader(self) -> Batches | None:
        """Validation images through the eval transform; None when the task has no validation split."""
        ...

    def replace_train(self, items: Sequence[Datum]) -> None:
        """Train on ``items`` instead (pseudo-labels, a derived set); only from ``prepare``. Labels index
        ``train_classes``; on the unlabeled path the engine scores them against the held-back truth (report only)."""
        ...


@torch.no_grad()
def extract_features(method: PromptMethod, batches: Batches, device: torch.device) -> tuple[Tensor, Tensor]:
    """(N, D) normalised image features of ``method`` (on CPU, float32) and (N,) labels of every batch."""
    method.eval()
    features, labels = [], []
    for images, y in batches:
        features.append(method.encode_images(images.to(device)).float().cpu())  # (B, D)
        labels.append(y)
    return torch.cat(features), torch.cat(labels)


def adapted_logits(method: PromptMethod, sample: Tensor, classes: ClassSet) -> Tensor:
    """(1, C) logits of one test sample after adapting to it (``test_time_adaptive``): ``reset``, ``adapt`` with
    gradients on (on the augmented views, or with ``adapts_on_eval_view`` on all of them), then the eval view
    scored. ``sample``: (1 + V, 3, H, W), the eval view first, or (1, 3, H, W)."""
    method.reset()
    views = sample if method.adapts_on_eval_view or sample.shape[0] == 1 else sample[1:]
    with torch.enable_grad():
        method.adapt(views, classes)
    with torch.no_grad():
        return method(sample[:1], classes).logits  # (1, C)
