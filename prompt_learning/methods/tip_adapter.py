"""Tip-Adapter: a training-free key-value cache of few-shot image features (Zhang et al., ECCV 2022;
docs/methods/tip_adapter.md).

Stages (``prepare`` then ``calibrate``; nothing is trained):

* cache (``prepare``): the K-shot training set is encoded ``augment_epoch`` (10) times through the cache
  augmentation (RandomResizedCrop scale 0.5-1, bicubic, + flip); the keys are
  F = norm(mean over passes of the *unnormalised* image features), (NK, D); the values are the one-hot labels
  L, (NK, N).
* logits (Eq. 6 of the paper, ``main.py`` of the official code):
  logits(x) = s * f^T W + alpha * exp(-beta * (1 - f^T F^T)) L, with f = norm(image feature), s the backbone's
  logit scale (100 for CLIP), W the zero-shot head: norm(mean over templates of norm(text features)) of the
  official template sets (ImageNet: CoOp's 7 selected templates; every other dataset its single template).
* search (``calibrate``): beta over ``search_step[0]`` values 0.1 + i (beta_max - 0.1) / steps and alpha over
  ``search_step[1]`` values 0.1 + j (alpha_max - 0.1) / steps, (beta_max, alpha_max) = the dataset's
  ``search_scale``; the pair with the best accuracy on the **validation** split is kept (the first best in
  beta-major order, as the official loop with a strict ">"). A task without a validation split (ImageNet,
  whose val is its test set: the official ImageNet script searches on test) keeps ``init_alpha`` /
  ``init_beta`` and says so in results.json.

Classes without cache entries (base-to-new's new classes, cross-dataset targets) get no votes: their logits
are the zero-shot head's alone (alpha = 0 for them), which ``prepare``'s summary in results.json records.

Departures: the cache is float32 (the official model runs in fp16, values stored fp16); the zero-shot logit
scale is the backbone's (exactly 100 for OpenAI's CLIP weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone.transforms import random_crop_view
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import (
    TEMPLATE_LIST,
    MethodConfig,
    MethodOutput,
    PromptMethod,
    register_method,
)
from prompt_learning.methods.stages import StageData, extract_features
from prompt_learning.prompts.templates import resolve_templates
from prompt_learning.validation import Rule, integer, number

# Official per-dataset settings (configs/<dataset>.yaml): (beta_max, alpha_max) of the search and init_alpha.
SEARCH_SCALES = {"imagenet": [7.0, 3.0], "oxford_pets": [7.0, 3.0], "ucf101": [7.0, 3.0], "caltech101": [12.0, 5.0],
                 "dtd": [13.0, 13.0], "eurosat": [12.0, 10.0], "fgvc_aircraft": [30.0, 30.0],
                 "food101": [10.0, 10.0], "oxford_flowers": [50.0, 50.0], "stanford_cars": [20.0, 10.0],
                 "sun397": [12.0, 10.0]}
INIT_ALPHAS = {"imagenet": 1.17, "oxford_pets": 1.17, "ucf101": 3.0, "caltech101": 3.0, "dtd": 2.0, "eurosat": 2.0,
               "fgvc_aircraft": 5.0, "food101": 1.17, "oxford_flowers": 10.0, "stanford_cars": 3.0, "sun397": 1.17}
UNSEEN_NOTE = "classes without cache entries are scored by the zero-shot head alone (alpha = 0 for them)"


def _positive_pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2 and all(
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0.1 for v in value)


POSITIVE_PAIR = Rule(_positive_pair, "a pair [beta_max, alpha_max], each above 0.1 (the grids start at 0.1)")


@dataclass
class TipAdapterConfig(MethodConfig):
    name: str = "tip_adapter"
    augment_epoch: int = 10  # augmented passes over the K-shot set averaged into the keys
    templates: list[str] = field(default_factory=lambda: ["dataset"])  # zero-shot head, datasets not listed below
    dataset_templates: dict[str, list[str]] = field(default_factory=lambda: {"imagenet": ["ensemble"]})
    search_scale: list[float] = field(default_factory=lambda: [7.0, 3.0])  # (beta_max, alpha_max), other datasets
    search_scales: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in SEARCH_SCALES.items()})
    search_step: list[int] = field(default_factory=lambda: [200, 20])  # grid sizes for beta and alpha
    init_alpha: float = 1.17  # alpha before the search (and while Tip-Adapter-F trains), other datasets
    init_alphas: dict[str, float] = field(default_factory=lambda: dict(INIT_ALPHAS))
    init_beta: float = 1.0
    cache_crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0])  # the cache augmentation's crop area

    RULES: ClassVar[dict[str, Rule]] = {"augment_epoch": integer(1), "templates": TEMPLATE_LIST,
                                        "search_scale": POSITIVE_PAIR, "init_alpha": number(0), "init_beta": number(0)}

    def __post_init__(self) -> None:
        if len(self.search_step) != 2 or min(self.search_step) < 1:
            raise ConfigurationError(f"method.search_step={self.search_step}; give two grid sizes [beta_steps, "
                                     f"alpha_steps], each at least 1 (official: [200, 20]).")
        low, high = self.cache_crop_scale
        if not 0 < low <= high <= 1:
            raise ConfigurationError(f"method.cache_crop_scale={self.cache_crop_scale}; give [min, max] crop areas "
                                     f"with 0 < min <= max <= 1 (official: [0.5, 1.0]).")


def search_grid(scale: float, steps: int) -> Tensor:
    """The official grid: ``steps`` values 0.1 + i * (scale - 0.1) / steps, i = 0..steps-1."""
    return 0.1 + torch.arange(steps, dtype=torch.float64) * (scale - 0.1) / steps  # (steps,)


def cache_votes(image_features: Tensor, keys: Tensor, values: Tensor, beta: Tensor | float) -> Tensor:
    """exp(-beta (1 - f F^T)) L: (B, D) features, (NK, D) keys, (NK, C) values -> (B, C) cache logits."""
    affinity = image_features @ keys.T  # (B, NK)
    return torch.exp(-beta * (1 - affinity)) @ values  # (B, C)


@register_method
class TipAdapter(PromptMethod):
    """The cache (keys, values) and alpha, beta as buffers: all four are in the export."""

    name = "tip_adapter"
    Config = TipAdapterConfig
    trainable = False
    prepares = True
    calibrates = True
    keys_are_learned: ClassVar[bool] = False  # Tip-Adapter-F trains the keys

    def __init__(self, cfg: TipAdapterConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        dataset = classes.dataset or ""
        self._set_cache(torch.zeros(0, backbone.embed_dim), torch.zeros(0, len(classes)))  # empty until prepare
        self.register_buffer("alpha", torch.tensor(float(cfg.init_alphas.get(dataset, cfg.init_alpha))))
        self.register_buffer("beta", torch.tensor(float(cfg.init_beta)))

    def _set_cache(self, keys: Tensor, values: Tensor) -> None:
        """Keys (NK, D) as a buffer (a parameter for Tip-Adapter-F) and one-hot values (NK, N)."""
        if self.keys_are_learned:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys)
        self.register_buffer("cache_values", values)

    # -- forward ---------------------------------------------------------------------------------------
    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """W: the zero-shot head of the official template set of ``classes``' dataset, (C, D)."""
        entries = self.cfg.dataset_templates.get(classes.dataset or "", self.cfg.templates)
        return self.backbone.zero_shot_text_features(classes.names, resolve_templates(entries, classes.template))

    def values_for(self, classes: ClassSet) -> Tensor:
        """The one-hot values as columns of ``classes`` (NK, C): a class outside the training set gets a zero
        column (no votes). The training classes themselves (every training step) take the values as they are."""
        if classes.names == self.train_classes.names:
            return self.cache_values  # (NK, N)
        index = {name: i for i, name in enumerate(self.train_classes.names)}
        pairs = [(j, index[n]) for j, n in enumerate(classes.names) if n in index]
        values = self.cache_values.new_zeros(self.cache_values.shape[0], len(classes))  # (NK, C)
        if pairs:
            columns, rows = zip(*pairs, strict=True)
            values[:, list(columns)] = self.cache_values[:, list(rows)]
        return values

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        if text_features is None:
            text_features = self.encode_classes(classes)  # (C, D)
        zero_shot = self.logits(image_features, text_features)  # (B, C) s f^T W
        keys = self.cache_keys.to(image_features.dtype)  # (NK, D)
        votes = cache_votes(image_features, keys, self.values_for(classes).to(image_features.dtype), self.beta)
        return MethodOutput(zero_shot + self.alpha * votes, image_features, text_features, classes)

    # -- stages ----------------------------------------------------------------------------------------
    def augmentation(self, default: Callable, classes: ClassSet) -> Callable:
        """The cache's augmentation (and Tip-Adapter-F's training one): RandomResizedCrop(scale 0.5-1, bicubic)
        + flip, at the backbone's resolution and normalisation."""
        low, high = self.cfg.cache_crop_scale
        return random_crop_view(self.backbone.preprocess_cfg, (low, high), "bicubic")

    @torch.no_grad()
    def prepare(self, data: StageData) -> dict[str, Any]:
        """Keys: norm(mean over ``augment_epoch`` augmented passes of the unnormalised features); values: one-hot."""
        passes, labels = [], None
        for index in range(self.cfg.augment_epoch):
            features, pass_labels = [], []
            for images, y in data.augmented_pass(index):
                features.append(self.backbone.encode_image(images.to(data.device)).float())  # (B, D) unnormalised
                pass_labels.append(y)
            passes.append(torch.cat(features))  # (NK, D)
            labels = torch.cat(pass_labels) if labels is None else labels
        keys = F.normalize(torch.stack(passes).mean(0), dim=-1)  # (NK, D)
        values = F.one_hot(labels.to(keys.device), len(self.train_classes)).float()  # (NK, N)
        self._set_cache(keys, values)
        return {"cache_entries": int(keys.shape[0]), "augment_epoch": self.cfg.augment_epoch,
                "cache_crop_scale": list(self.cfg.cache_crop_scale), "unseen_classes": UNSEEN_NOTE}

    def search_scale(self) -> list[float]:
        return list(self.cfg.search_scales.get(self.train_classes.dataset or "", self.cfg.search_scale))

    @torch.no_grad()
    def calibrate(self, data: StageData) -> dict[str, Any]:
        """alpha, beta by grid search on the validation split (never the test split)."""
        batches = data.val_loader()
        summary: dict[str, Any] = {"search_split": "val", "search_scale": self.search_scale(),
                                   "search_step": list(self.cfg.search_step)}
        if batches is None:
            return {**summary, "search_split": None, "alpha": float(self.alpha), "beta": float(self.beta),
                    "note": "no validation split: alpha and beta keep their initial values (never searched on test)"}
        features, labels = extract_features(self, batches, data.device)  # (Nv, D), (Nv,)
        alpha, beta, accuracy = self.search(features.to(self.alpha.device), labels.to(self.alpha.device))
        self.alpha.fill_(alpha)
        self.beta.fill_(beta)
        return {**summary, "alpha": alpha, "beta": beta, "val_acc": accuracy, "n_val": int(labels.numel())}

    def search(self, features: Tensor, labels: Tensor) -> tuple[float, float, float]:
        """The best (alpha, beta) on normalised ``features`` (Nv, D) with ``labels`` (Nv,), and its accuracy (%)."""
        (beta_max, alpha_max), (beta_steps, alpha_steps) = self.search_scale(), self.cfg.search_step
        betas, alphas = search_grid(beta_max, beta_steps), search_grid(alpha_max, alpha_steps)
        zero_shot = self.logits(features, self.encode_classes(self.train_classes))  # (Nv, N)
        keys, values = self.cache_keys.to(features.dtype), self.cache_values.to(features.dtype)
        accuracy = torch.empty(beta_steps, alpha_steps, dtype=torch.float64)
        for i, beta in enumerate(betas.tolist()):
            votes = cache_votes(features, keys, values, beta)  # (Nv, N)
            logits = zero_shot + alphas.to(features)[:, None, None] * votes  # (A, Nv, N)
            accuracy[i] = (logits.argmax(-1) == labels).double().mean(-1) * 100  # (A,)
        best = int(accuracy.flatten().argmax())  # the first best, beta-major (the official strict ">")
        i, j = divmod(best, alpha_steps)
        return float(alphas[j]), float(betas[i]), float(accuracy[i, j])

    # -- export --------------------------------------------------------------------------------------
    def load_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        """The cache's size (NK) comes from the export: size the holders to it, then load as usual."""
        keys, values = tensors.get("cache_keys"), tensors.get("cache_values")
        if keys is not None and values is not None and keys.dim() == 2 and values.dim() == 2:
            self._set_cache(torch.zeros(keys.shape[0], self.backbone.embed_dim, device=self.alpha.device),
                            torch.zeros(values.shape[0], len(self.train_classes), device=self.alpha.device))
        super().load_tensors(tensors)
