"""Zero-shot CLIP (Radford et al. 2021): class features from hand-written templates, nothing learned.

For templates t_1..t_T, w_c = norm(mean_t norm(g(t(c)))); logits = s * norm(f(x)) @ w^T. With the
single dataset template this is the "CLIP" row of the base-to-new tables; ``[ensemble, dataset]`` is
CoOp's ``ZeroshotCLIP2`` (7 ImageNet templates + the dataset's, docs/methods/zeroshot.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.methods.base import TEMPLATE_LIST, MethodConfig, PromptMethod, register_method
from prompt_learning.prompts.templates import resolve_templates
from prompt_learning.validation import Rule


@dataclass
class ZeroShotConfig(MethodConfig):
    name: str = "zeroshot"
    templates: list[str] = field(default_factory=lambda: ["dataset"])  # "dataset", "ensemble" or literal "{}" strings

    RULES: ClassVar[dict[str, Rule]] = {"templates": TEMPLATE_LIST}


@register_method
class ZeroShotCLIP(PromptMethod):
    name = "zeroshot"
    Config = ZeroShotConfig
    trainable = False

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        templates = resolve_templates(self.cfg.templates, classes.template)
        return self.backbone.zero_shot_text_features(classes.names, templates)  # (C, D)
