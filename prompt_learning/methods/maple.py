"""MaPLe: Multi-modal Prompt Learning (Khattak et al., CVPR 2023; ``docs/methods/maple.md``).

Text prompts as in IVLP: context P^0 (n x W_t) after the start token (first n tokens of "a photo of
a"; the rest of the phrase stays frozen) and deep prompts P^i before text blocks 1..J-1. The vision
prompts are *not* parameters: Eq. (5), P~^k = F_k(P^k), a linear text->vision coupler per layer
(``prompts.coupling``), so gradients of the image branch reach the text prompts.

Trainable parameters on ViT-B/16 with n=2, J=9 (the default):
  text prompts    J x n x W_t              = 9 x 2 x 512           =     9,216
  couplers        J x (W_t x W_v + W_v)    = 9 x (512 x 768 + 768) = 3,545,856
  total                                                            = 3,555,072
(The spec's "~3.55M" is this figure: the layer-0 coupler ``proj`` plus J-1 deep couplers, each a
512 -> 768 Linear with bias.)  Cross-dataset preset: J=3. The text branch and both encode paths are
:class:`~prompt_learning.methods.deep_prompting.DeepPromptMethod`'s, shared with IVLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, register_method
from prompt_learning.methods.deep_prompting import DeepPromptMethod
from prompt_learning.prompts.coupling import TextToVisionCouplers
from prompt_learning.prompts.deep import prompt_depth
from prompt_learning.validation import Rule, number


@dataclass
class MaPLeConfig(MethodConfig):
    name: str = "maple"
    n_ctx: int = 2  # prompt tokens per layer, shared by both branches through the couplers
    depth: int = 9  # J: prompted layers in both towers, counting the input layer
    ctx_init: str = "a photo of a"
    init_std: float = 0.02

    RULES: ClassVar[dict[str, Rule]] = {"init_std": number(0)}

    def __post_init__(self) -> None:
        if self.n_ctx < 1 or self.depth < 1:
            raise ConfigurationError(f"method.n_ctx={self.n_ctx}, method.depth={self.depth}; both must be >= 1.")


@register_method
class MaPLe(DeepPromptMethod):
    """Text branch (:class:`DeepPromptMethod`) of depth J in both towers, vision prompts coupled to it."""

    name = "maple"
    Config = MaPLeConfig
    touches_image_tower = True

    def __init__(self, cfg: MaPLeConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        vision = self.require_vision()
        text = backbone.require_text(f"method {self.name!r}")
        depth = prompt_depth(cfg.depth, min(text.depth, vision.depth), "method.depth", backbone.model_name)
        self.build_text_branch(cfg.n_ctx, depth, cfg.ctx_init, cfg.init_std, "method.depth")
        n_layers = len(self.text_deep) + 1  # J
        self.couplers = TextToVisionCouplers(n_layers, backbone.text_width, vision.width)  # F_0..F_{J-1}

    def vision_layer_prompts(self) -> dict[int, Tensor]:
        """Layer k -> (n, W_v) vision prompt P~^k = F_k(P^k) (Eq. 5), the image of text prompt P^k."""
        return self.couplers(self.text_layer_prompts())
