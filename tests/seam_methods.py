"""Test-only methods, registered from outside the package, that each use one run stage of the engine.

They are not paper methods: each is the smallest method that makes a stage observable, and each records
what the engine did to it in ``CALLS`` so that a test fails when the engine skips the stage.

All share one model: logits = scale * norm(f_img) @ norm(t_c + offset_c)^T, where t_c are zero-shot text
features of "a photo of a {class}." and ``offset`` (C, D) is the learned part.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.methods import MethodConfig, MethodOutput, PromptMethod, register_method
from prompt_learning.methods.stages import Optimization, StageData, extract_features

CALLS: Counter[str] = Counter()
SEEN: dict[str, Any] = {}


@dataclass
class OffsetConfig(MethodConfig):
    scale_offsets: float = 1.0


def class_means(features: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """(N, D) features, (N,) labels -> (C, D) mean feature of each class."""
    return torch.stack([features[labels == c].mean(0) for c in range(n_classes)])


class OffsetMethod(PromptMethod):
    """Zero-shot text features plus a learned (C, D) offset per training class."""

    Config = OffsetConfig
    supports_unseen_classes = False

    def __init__(self, cfg: OffsetConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.offset = nn.Parameter(torch.zeros(len(classes), backbone.embed_dim))  # (C, D)

    def zero_shot(self, classes: ClassSet) -> Tensor:
        with torch.no_grad():
            return self.backbone.zero_shot_text_features(classes.names, ["a photo of a {}."])  # (C, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        self.check_classes(classes)
        text = self.zero_shot(classes).to(self.offset) + self.cfg.scale_offsets * self.offset  # (C, D)
        return F.normalize(text, dim=-1)


@register_method
class PrepareOnly(OffsetMethod):
    """prepare: derives a buffer (the class means of frozen training features) and halves the training set."""

    name = "test_prepare"
    prepares = True

    def prepare(self, data: StageData) -> dict[str, Any]:
        CALLS["prepare"] += 1
        SEEN["prepare_grad_enabled"] = torch.is_grad_enabled()
        items = data.train_items()
        features, labels = extract_features(self, data.train_loader(augment=False), data.device)  # (N, D), (N,)
        self.register_buffer("class_means", class_means(features, labels, len(self.train_classes)))  # (C, D)
        kept = items[::2]
        data.replace_train(kept)
        return {"n_before": len(items), "n_after": len(kept)}

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        if not hasattr(self, "class_means"):
            raise RuntimeError("prepare was skipped")
        return super().encode_classes(classes, image_features)


@register_method
class ClosedFormFit(OffsetMethod):
    """Closed-form fit: offset_c = mean frozen feature of class c minus the zero-shot text feature."""

    name = "test_closed_form"
    fits_in_closed_form = True

    def fit(self, data: StageData) -> dict[str, Any]:
        CALLS["fit"] += 1
        features, labels = extract_features(self, data.train_loader(augment=False), data.device)  # (N, D), (N,)
        means = class_means(features, labels, len(self.train_classes))  # (C, D)
        with torch.no_grad():
            self.offset.copy_(means.to(self.offset) - self.zero_shot(self.train_classes).to(self.offset))
        SEEN["fit_means"], SEEN["backbone"] = means, self.backbone
        return {"n": int(labels.numel())}


@register_method
class CalibrateOnly(OffsetMethod):
    """calibrate: picks the offset scale on the validation split, and may not read the training set."""

    name = "test_calibrate"
    calibrates = True

    def calibrate(self, data: StageData) -> dict[str, Any]:
        CALLS["calibrate"] += 1
        try:
            data.train_loader()
        except RuntimeError:
            SEEN["calibrate_train_refused"] = True
        features, labels = extract_features(self, data.val_loader(), data.device)
        self.cfg.scale_offsets = 0.5
        SEEN["calibrate_n_val"] = int(labels.numel())
        return {"n_val": int(labels.numel()), "scale_offsets": 0.5}


@register_method
class AdaptPerSample(OffsetMethod):
    """Test-time adaptation: one gradient step on the prediction entropy per test sample, undone by reset."""

    name = "test_adapt"
    trainable = False
    test_time_adaptive = True
    test_views = 3

    def reset(self) -> None:
        CALLS["reset"] += 1
        with torch.no_grad():
            self.offset.zero_()

    def adapt(self, images: Tensor, classes: ClassSet) -> None:
        CALLS["adapt"] += 1
        SEEN.setdefault("offset_norm_before_adapt", []).append(float(self.offset.norm()))
        SEEN["adapt_grad_enabled"] = torch.is_grad_enabled()
        SEEN.setdefault("views", []).append(images.detach().clone())
        self.offset.requires_grad_(True)
        probs = self(images, classes).logits.softmax(-1)  # (1, C)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
        (grad,) = torch.autograd.grad(entropy, [self.offset])
        with torch.no_grad():
            self.offset -= 0.1 * grad


@register_method
class OwnLoss(OffsetMethod):
    """A method-owned loss that ignores the labels: pull every offset towards a fixed target."""

    name = "test_own_loss"

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        CALLS["loss"] += 1
        target = torch.full_like(self.offset, 0.01)  # (C, D)
        return {"pull": ((self.offset - target) ** 2).sum() + 0.0 * out.logits.sum()}


@register_method
class OwnOptimization(OffsetMethod):
    """Its own optimisation: plain SGD at lr 1 with a per-step schedule and a tiny gradient-norm limit, so
    each step moves the offset by at most the limit."""

    name = "test_own_optimizer"
    max_grad_norm = 1e-3

    def configure_optimization(self, optim, max_epochs: int, total_steps: int) -> Optimization:
        CALLS["configure_optimization"] += 1
        SEEN["total_steps"] = total_steps
        optimizer = torch.optim.SGD([{"params": [self.offset], "lr": 1.0}])

        def per_step(step: int) -> float:
            CALLS["scheduler_step"] += 1
            return 1.0

        SEEN["start"] = self.offset.detach().clone()
        return Optimization(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, per_step), "step",
                            self.max_grad_norm)
