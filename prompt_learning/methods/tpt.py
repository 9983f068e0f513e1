"""TPT: Test-time Prompt Tuning (Shu et al., NeurIPS 2022; docs/methods/tpt.md).

Nothing is trained before the test. For every test image, starting each time from the same prompt:

1. views: the eval view v_0 plus ``views`` (63) augmented views v_1..v_63 (RandomResizedCrop + flip, with
   AugMix except on the ImageNet family, the official switch; ``prompt_learning.data.augmix``);
2. p_i = softmax(logits(v_i)), H_i = -sum_c p_ic log p_ic; keep the int(``selection_p`` * 64) = 6 views of
   lowest entropy (v_0 is eligible);
3. one AdamW step (lr 5e-3, weight decay 0.01) on the prompt that lowers the entropy of the averaged
   prediction of the kept views: p_bar = mean_i p_i, computed as logsumexp_i log p_i - log |S|;
   L = -sum_c p_bar_c log p_bar_c;
4. classify v_0 with the tuned prompt; then ``reset`` restores the prompt and the optimiser state exactly.

The prompt is that of a *base method*: by default CoOp's 4-token context initialised from "a photo of a"
(TPT's own initialisation), or any export of this project (``init_from``): CoOp, KgCoOp, ProGrad, PRE, deep
language prompts, IVLP, MaPLe and VPT-deep work (the tuned tensors are the base's ``test_time_parameters``:
all its prompt vectors, PRE's context without its encoder); CoCoOp is refused (its context is generated
per image). The export of a TPT run holds the base's tensors and config: the initial prompt and the settings.

Departures: views are drawn from torch's generator seeded per image (not numpy's); under fp16 autocast on a
GPU a GradScaler (initial scale 1000, as the official code) scales the loss, and is not reset between images
either; the class names are the dataset's own lists (the official code has its own).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.data.augmix import TPTViews
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import (
    MethodConfig,
    MethodOutput,
    PromptMethod,
    create_method,
    register_method,
)
from prompt_learning.validation import Rule, integer, number, one_of

IMAGENET_FAMILY = ["imagenet", "imagenet_a", "imagenet_r", "imagenet_sketch", "imagenetv2"]


@dataclass
class TPTConfig(MethodConfig):
    name: str = "tpt"
    ctx_init: str = "a photo of a"  # the default base: CoOp with this phrase as its context
    init_from: str = ""  # an export directory (or hf-hub:<repo>) of a text-prompt run to start from instead
    views: int = 63  # augmented views per test image (+ the eval view: the official batch of 64)
    selection_p: float = 0.1  # fraction of the 64 views kept (lowest entropy)
    steps: int = 1  # AdamW steps per image (further steps reuse the first step's selection)
    lr: float = 5e-3
    weight_decay: float = 0.01  # torch's AdamW default, which the official code keeps
    augmix: str = "auto"  # auto: AugMix except on no_augmix_datasets | on | off
    no_augmix_datasets: list[str] = field(default_factory=lambda: list(IMAGENET_FAMILY))
    # Filled from init_from (and read back from a TPT export): the base method's config and training classes.
    base: dict[str, Any] = field(default_factory=dict)
    base_classnames: list[str] = field(default_factory=list)
    initialised_from: str = ""  # where init_from pointed (a record only)

    RULES: ClassVar[dict[str, Rule]] = {"views": integer(1), "selection_p": number(above=0, maximum=1),
                                        "steps": integer(1), "lr": number(above=0), "weight_decay": number(0),
                                        "augmix": one_of(("auto", "on", "off"))}


def view_entropy(logits: Tensor) -> Tensor:
    """(V, C) logits -> (V,) entropy of each view's prediction."""
    log_probs = logits.log_softmax(-1)  # (V, C)
    return -(log_probs.exp() * log_probs).sum(-1)


def confident_views(logits: Tensor, selection_p: float) -> Tensor:
    """Indices of the int(selection_p * V) (at least 1) views of lowest entropy, (S,)."""
    keep = max(int(logits.shape[0] * selection_p), 1)
    return view_entropy(logits.detach()).argsort()[:keep]


def marginal_entropy(logits: Tensor) -> Tensor:
    """Entropy of the averaged prediction of (S, C) logits: log p_bar = logsumexp_i log p_i - log S."""
    log_probs = logits.float().log_softmax(-1)  # (S, C)
    log_mean = log_probs.logsumexp(0) - math.log(logits.shape[0])  # (C,)
    log_mean = log_mean.clamp_min(torch.finfo(log_mean.dtype).min)
    return -(log_mean.exp() * log_mean).sum()


@register_method
class TPT(PromptMethod):
    """``self.base``: the method whose prompt is tuned per test image (a submodule: its tensors are exported)."""

    name = "tpt"
    Config = TPTConfig
    trainable = False
    test_time_adaptive = True
    adapts_on_eval_view = True

    def __init__(self, cfg: TPTConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.base = self._base_method(cfg, backbone, classes)
        if self.base.conditional_text:
            raise ConfigurationError(f"method=tpt cannot start from method {self.base.name!r}: its class prompts are "
                                     f"generated from each image; start from a text-prompt export (CoOp, KgCoOp, "
                                     f"ProGrad, PRE, language_deep) or one that prompts the image tower (IVLP, MaPLe, VPT).")
        self.test_views = cfg.views
        self.touches_image_tower = self.base.touches_image_tower
        self.supports_unseen_classes = self.base.supports_unseen_classes
        self._tuned = self.base.test_time_parameters()
        if not self._tuned:
            raise ConfigurationError(f"method=tpt: the export of method {self.base.name!r} has no prompt to tune.")
        tuned = {id(p) for p in self._tuned}
        for p in self.base.parameters():
            p.requires_grad_(id(p) in tuned)
        self._initial: list[Tensor] | None = None  # the prompt before any adaptation (taken at the first reset)
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_initial: dict[str, Any] | None = None
        self._scaler: torch.amp.GradScaler | None = None

    @staticmethod
    def _base_method(cfg: TPTConfig, backbone, classes: ClassSet) -> PromptMethod:
        """The export ``init_from`` (recording its config in ``cfg``), else the recorded or default base."""
        if cfg.init_from:
            from prompt_learning.export.io import load_method  # the export layer builds on the methods

            base = load_method(cfg.init_from, backbone)
            cfg.base, cfg.base_classnames = base.export_settings(), list(base.train_classes.names)
            cfg.initialised_from = str(cfg.init_from)
            return base
        base_classes = ClassSet(tuple(cfg.base_classnames), classes.template, classes.dataset) \
            if cfg.base_classnames else classes
        base = create_method(cfg.base or {"name": "coop", "ctx_init": cfg.ctx_init}, backbone, base_classes)
        cfg.base = base.export_settings()  # recorded in the export, whichever way the base was chosen
        return base

    # -- forward: the base method's ----------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Tensor:
        return self.base.encode_images(images)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        return self.base.encode_classes(classes, image_features)

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        return self.base(images, classes, text_features)

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        return self.base.forward_features(image_features, classes, text_features)

    def check_classes(self, classes: ClassSet) -> None:
        self.base.check_classes(classes)

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        return self.base.text_prompt_tensors()

    # -- test-time adaptation ----------------------------------------------------------------------------
    def augmentation(self, default: Callable, classes: ClassSet) -> Callable:
        """TPT's views: RandomResizedCrop(0.08-1, bilinear) + flip, with AugMix unless the dataset is listed."""
        mode = self.cfg.augmix
        augmix = mode == "on" or (mode == "auto" and (classes.dataset or "") not in self.cfg.no_augmix_datasets)
        return TPTViews(self.backbone.preprocess_cfg, augmix=augmix)

    def reset(self) -> None:
        """Back to the prompt and optimiser state before any adaptation, bit for bit."""
        with torch.no_grad():
            if self._initial is None:
                self._initial = [p.detach().clone() for p in self._tuned]
            for p, initial in zip(self._tuned, self._initial, strict=True):
                p.copy_(initial)
        if self._optimizer is not None:
            self._optimizer.zero_grad(set_to_none=True)
            self._optimizer.load_state_dict(copy.deepcopy(self._optimizer_initial))

    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(self._tuned, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
            self._optimizer_initial = copy.deepcopy(self._optimizer.state_dict())
        return self._optimizer

    def _loss_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """A GradScaler under fp16 autocast on a GPU (the official AMP set-up), else None."""
        if device.type != "cuda" or not torch.is_autocast_enabled("cuda") or \
                torch.get_autocast_dtype("cuda") != torch.float16:
            return None
        if self._scaler is None:
            self._scaler = torch.amp.GradScaler("cuda", init_scale=1000)
        return self._scaler

    def view_logits(self, views: Tensor, classes: ClassSet, image_features: Tensor | None) -> Tensor:
        """(V, C) logits of the views with gradients to the prompt; frozen image features are reused."""
        if image_features is not None:
            return self.base.forward_features(image_features, classes).logits
        return self.base(views, classes).logits

    def adapt(self, views: Tensor, classes: ClassSet) -> None:
        """``steps`` AdamW steps on the marginal entropy of the confident views; ``views``: (1 + V, 3, H, W)."""
        if self._initial is None:
            self.reset()  # record the starting prompt before the first change
        optimizer = self.optimizer()
        frozen_images = not self.base.touches_image_tower and type(self.base).forward is PromptMethod.forward
        image_features = None
        if frozen_images:
            with torch.no_grad():
                image_features = self.base.encode_images(views)  # (1 + V, D)
        selected = None
        for _ in range(self.cfg.steps):
            logits = self.view_logits(views, classes, image_features)  # (1 + V, C)
            if selected is None:
                selected = confident_views(logits, self.cfg.selection_p)  # (S,)
            loss = marginal_entropy(logits[selected])
            optimizer.zero_grad(set_to_none=True)
            scaler = self._loss_scaler(views.device)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

    # -- export ------------------------------------------------------------------------------------------
    def export_settings(self) -> dict[str, Any]:
        """The base's config is recorded, so the export does not need ``init_from`` again."""
        return {**super().export_settings(), "init_from": ""}

    def load_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        super().load_tensors(tensors)
        self._initial = None  # the loaded prompt is the new starting point


def tuned_parameter_count(method: TPT) -> int:
    """How many numbers TPT tunes per image (ViT-B/16 from "a photo of a": 4 x 512 = 2,048)."""
    return sum(p.numel() for p in method._tuned)


__all__ = ["TPT", "TPTConfig", "confident_views", "marginal_entropy", "tuned_parameter_count", "view_entropy"]
