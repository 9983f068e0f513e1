"""VPT-deep: Visual Prompt Tuning (Jia et al., ECCV 2022), as the "deep vision prompting" baseline of
MaPLe (Khattak et al. CVPR 2023; docs/methods/vpt.md).

Vision only: layer 0's n learnable tokens are appended to the patch tokens after the positional
embedding and before ``ln_pre`` (they get no positional embedding); layers 1..J-1 overwrite those n
slots with fresh tokens before block i (Eq. 2 of VPT with depth J counting the input layer). The
text side is frozen: class features come from the fixed template ``"a photo of a {}."`` (not the
dataset's template), as in the official trainer. Defaults: 8 tokens, depth 12 -> 12 x 8 x 768 =
73,728 parameters on ViT-B/16.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import TEMPLATE_LIST, MethodConfig, PromptMethod, register_method
from prompt_learning.prompts.deep import LayerPrompts, prompt_depth, split_input_layer
from prompt_learning.prompts.templates import resolve_templates
from prompt_learning.validation import Rule, number


@dataclass
class VPTConfig(MethodConfig):
    name: str = "vpt"
    n_tokens: int = 8  # prompt tokens per layer
    depth: int = 12  # prompted layers, counting the input layer (1 = shallow VPT)
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])  # frozen text side
    init_std: float = 0.02

    RULES: ClassVar[dict[str, Rule]] = {"init_std": number(0), "templates": TEMPLATE_LIST}

    def __post_init__(self) -> None:
        if self.n_tokens < 1 or self.depth < 1:
            raise ConfigurationError(f"method.n_tokens={self.n_tokens}, method.depth={self.depth}; VPT needs at "
                                     f"least one token in at least the input layer.")


@register_method
class VPT(PromptMethod):
    name = "vpt"
    Config = VPTConfig
    touches_image_tower = True

    def __init__(self, cfg: VPTConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        vision = self.require_vision()
        depth = prompt_depth(cfg.depth, vision.depth, "method.depth", backbone.model_name)
        self.vision_prompts = LayerPrompts(range(depth), cfg.n_tokens, vision.width, cfg.init_std)

    def encode_images(self, images: Tensor) -> Tensor:
        first, deep = split_input_layer(self.vision_prompts())
        return F.normalize(self.backbone.encode_image(images, first, deep).float(), dim=-1)  # (B, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        templates = resolve_templates(self.cfg.templates, classes.template)
        return self.backbone.zero_shot_text_features(classes.names, templates)  # (C, D)
