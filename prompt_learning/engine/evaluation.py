"""Evaluation: one test path through the Lightning module (metrics by torchmetrics), fed either images or
cached frozen image features. Per eval set: top-1 accuracy, exact (100 * correct / total from integer counts),
and the calibration of the predicted probabilities: ECE (%, 15 bins) and NLL (nats) (docs/protocols.md).

Methods whose image features do not depend on learned state (``touches_image_tower`` False) are scored
from cached frozen features when the run is single-process, the cache is on and the weights have a
reproducible identity (random weights are never cached): the same logits as the image loop, for the cost
of the text side. Test-time-adaptive methods, and methods that read the image tower's hidden states
(``reads_hidden_states``), always see images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from prompt_learning.data.feature_cache import cached_image_features
from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.module import PromptLearningModule
from prompt_learning.engine.stages import feature_cache_identity, weights_have_identity
from prompt_learning.methods import PromptMethod
from prompt_learning.protocols import Protocol, Task


def scores_from_cached_features(method: PromptMethod, dm: PromptDataModule, world_size: int) -> bool:
    """Whether ``method`` is scored from cached frozen image features (module docstring)."""
    return (bool(dm.eval_cache_dir) and weights_have_identity(method.backbone) and not method.touches_image_tower
            and not method.reads_hidden_states and not method.test_time_adaptive and world_size == 1)


@torch.no_grad()
def cached_feature_loaders(method: PromptMethod, task: Task, dm: PromptDataModule) -> list[DataLoader]:
    """One loader of ((B, D) frozen image features, (B,) labels) per eval set, read from or written to the
    disk cache next to the decoded test images."""
    method.eval()
    device = method.backbone.device
    cache = Path(str(dm.eval_cache_dir)).parent / "image_features"
    identity = feature_cache_identity(method.backbone)
    loaders = []
    for e in task.evals:
        features = cached_image_features(method.encode_images, identity, e.items, e.load_image or dm.load_image,
                                         dm.eval_transform, cache, device, dm.eval_batch_size, dm.num_workers,
                                         e.name)  # (N, D)
        labels = torch.tensor([d.label for d in e.items], device=features.device)  # (N,)
        batches = BatchSampler(SequentialSampler(range(len(labels))), dm.eval_batch_size, drop_last=False)
        loaders.append(DataLoader(TensorDataset(features, labels), sampler=batches, batch_size=None))  # sliced
    return loaders


def eval_metrics(trainer: L.Trainer, method: PromptMethod, task: Task, dm: PromptDataModule
                 ) -> dict[str, dict[str, Any]]:
    """``{eval name: {"acc": %, "ece": %, "nll": nats}}`` of ``method`` on each eval set of ``task``."""
    module = PromptLearningModule(method.backbone, method, task.train_classes,
                                  [(e.name, e.classes) for e in task.evals])
    dm.use_test_views(method)  # (1 + V) views per test image for test-time adaptation
    if scores_from_cached_features(method, dm, trainer.world_size):
        trainer.test(module, dataloaders=cached_feature_loaders(method, task, dm), verbose=False)
    else:
        trainer.test(module, datamodule=dm, verbose=False)
    return {name: {"acc": acc, **module.test_calibration_results[name]} for name, acc in module.test_results.items()}


def with_calibration(summary: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``summary`` (the protocol's, from the accuracies) with each eval set's ``ece`` and ``nll`` added next to
    its ``acc`` in ``summary["metrics"]``."""
    out = {**summary, "metrics": {name: dict(m) for name, m in summary["metrics"].items()}}
    for name, values in metrics.items():
        if name in out["metrics"]:
            out["metrics"][name].update({k: v for k, v in values.items() if k != "acc"})
    return out


def evaluate_method(trainer: L.Trainer, method: PromptMethod, task: Task, dm: PromptDataModule,
                    protocol: Protocol | None = None) -> dict[str, Any]:
    """Accuracy, ECE and NLL per eval set, summarised by the protocol from the accuracies (base-to-new's HM,
    the transfer target mean)."""
    for e in task.evals:
        method.check_classes(e.classes)
    metrics = eval_metrics(trainer, method, task, dm)
    if protocol is None:
        return {"metrics": metrics}
    accuracy = {name: m["acc"] for name, m in metrics.items()}
    return with_calibration(protocol.summarize(accuracy, task), metrics)
