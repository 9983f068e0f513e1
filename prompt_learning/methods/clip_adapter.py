"""CLIP-Adapter (Gao et al., arXiv 2110.04544, 2021; docs/methods/clip_adapter.md): a residual bottleneck MLP
on the frozen image feature, scored against fixed hand-written class features. The visual adapter of the
official ``clip_adapter.py`` (gaopengcuhk/CLIP-Adapter).

The paper's visual adapter and blend, with f the image feature and W_1, W_2 two bias-free layers::

    A(f)   = ReLU(W_2 ReLU(W_1 f))                      W_1: (D/4, D) ``down``, W_2: (D, D/4) ``up``
    f'     = alpha * A(f) + (1 - alpha) * f             alpha = ``ratio`` (official code: 0.2)
    w_c    = norm(g(template(c)))                       fixed zero-shot class features, (C, D)
    logits = s * norm(f') @ w^T                         s = CLIP's logit scale; loss = CE(logits, y)

The outer ReLU of A is the official code's (the paper's formula, as recalled, ends with W_2).

The official code feeds the *unnormalised* image feature f to A. Here ``encode_images`` stays the base
class's (L2-normalised frozen features, f_hat = f / |f|) and the adapter runs in ``forward_features``, so the
engine's frozen-feature caches (evaluation, ``data.feature_cache.train_views``) stay valid. This gives the same
logits: A is positively homogeneous (linear maps without bias and ReLU commute with a positive scale), so

    alpha * A(f) + (1 - alpha) * f = |f| * (alpha * A(f_hat) + (1 - alpha) * f_hat)

and the final L2 normalisation removes |f|. The logits are the same function of the adapter weights, so
their gradients are the same too.

Departures: D is the backbone's ``embed_dim`` (the official file hard-codes 1024, RN50's width); ``ratio`` is a
config key (the official code hard-codes 0.2); the class features are computed once per class set (through
the backbone's zero-shot cache) instead of at every forward; fp32 parameters (the official adapter is fp16,
cast to CLIP's dtype); ``templates`` may also list an ensemble (the official code uses the dataset's one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.methods.base import (
    TEMPLATE_LIST,
    MethodConfig,
    MethodOutput,
    PromptMethod,
    register_method,
)
from prompt_learning.prompts.templates import resolve_templates
from prompt_learning.validation import Rule, number

REDUCTION = 4  # bottleneck width D / 4 (the official Adapter's reduction)


@dataclass
class CLIPAdapterConfig(MethodConfig):
    name: str = "clip_adapter"
    ratio: float = 0.2  # alpha, the adapter's share of the blended feature (official code: 0.2)
    templates: list[str] = field(default_factory=lambda: ["dataset"])  # the fixed class prompts, as zeroshot

    RULES: ClassVar[dict[str, Rule]] = {"ratio": number(above=0, maximum=1), "templates": TEMPLATE_LIST}


@register_method
class CLIPAdapter(PromptMethod):
    name = "clip_adapter"
    Config = CLIPAdapterConfig

    def __init__(self, cfg: CLIPAdapterConfig, backbone: FrozenCLIP, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        dim = backbone.embed_dim
        self.down = nn.Linear(dim, dim // REDUCTION, bias=False)  # W_1: (D/4, D), default init
        self.up = nn.Linear(dim // REDUCTION, dim, bias=False)  # W_2: (D, D/4), default init

    def adapter(self, features: Tensor) -> Tensor:
        """A(f) = ReLU(W_2 ReLU(W_1 f)): (B, D) -> (B, D)."""
        return F.relu(self.up(F.relu(self.down(features))))  # (B, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """w: (C, D) zero-shot features of the hand-written templates, fixed; cached per class set and
        templates by the backbone, so a forward never re-runs the text tower."""
        templates = resolve_templates(self.cfg.templates, classes.template)
        with torch.no_grad():
            return self.backbone.zero_shot_text_features(classes.names, templates)  # (C, D)

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        """From the frozen normalised features f_hat (B, D): norm(alpha * A(f_hat) + (1 - alpha) * f_hat),
        then s * cosine with the class features. ``out.image_features`` is the adapted, normalised feature."""
        if text_features is None:
            text_features = self.encode_classes(classes)  # (C, D)
        ratio = self.cfg.ratio
        blended = ratio * self.adapter(image_features) + (1 - ratio) * image_features  # (B, D)
        adapted = F.normalize(blended, dim=-1)  # (B, D)
        return MethodOutput(self.logits(adapted, text_features), adapted, text_features, classes)
