"""IVLP: Independent Vision-Language Prompting, the baseline of MaPLe (Khattak et al. CVPR 2023,
Sec. 4; ``docs/methods/ivlp.md``).

Two uncoupled deep-prompt branches:
* text: context P_t^0 (n_t x W_t) after the start token, initialised from ``ctx_init`` (first n_t
  tokens learnable, the rest of the phrase frozen), plus fresh P_t^i replacing positions 1..n_t
  before text block i = 1..J_t-1;
* vision: P_v^0 (n_v x W_v) appended before ``ln_pre`` and fresh P_v^i replacing the last n_v tokens
  before vision block i = 1..J_v-1.
Loss: cross-entropy. Presets (``docs/methods/ivlp.md``): MaPLe repo 2+2 tokens, depth 12/12 (30,720
parameters on ViT-B/16, the default here); PromptSRC repo 4+4 tokens, depth 9/9 (46,080).
The text branch and both encode paths are shared with MaPLe
(:class:`~prompt_learning.methods.deep_prompting.DeepPromptMethod`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, register_method
from prompt_learning.methods.deep_prompting import DeepPromptMethod
from prompt_learning.prompts.deep import LayerPrompts, prompt_depth
from prompt_learning.validation import Rule, number


@dataclass
class IVLPConfig(MethodConfig):
    name: str = "ivlp"
    n_ctx_text: int = 2  # text prompt tokens per layer
    n_ctx_vision: int = 2  # vision prompt tokens per layer (0: text-only, as method=language_deep)
    depth_text: int = 12  # prompted text layers, counting the input layer
    depth_vision: int = 12  # prompted vision layers, counting the input layer
    ctx_init: str = "a photo of a"  # first n_ctx_text tokens initialise the text context; the rest stay frozen
    init_std: float = 0.02

    RULES: ClassVar[dict[str, Rule]] = {"init_std": number(0)}

    def __post_init__(self) -> None:
        if self.n_ctx_text < 1 or self.depth_text < 1:
            raise ConfigurationError(f"method.n_ctx_text={self.n_ctx_text}, method.depth_text={self.depth_text}: "
                                     f"{self.name} needs text prompts; for vision-only prompts use method=vpt.")
        if self.n_ctx_vision < 0 or self.depth_vision < 0:
            raise ConfigurationError("method.n_ctx_vision and method.depth_vision must be >= 0.")


@register_method
class IVLP(DeepPromptMethod):
    """Text branch (``context`` + ``text_deep``, :class:`DeepPromptMethod`) and an independent vision branch:
    free parameters ``vision_prompts`` P_v^0..P_v^{J_v-1}, or none (text-only, as method=language_deep)."""

    name = "ivlp"
    Config = IVLPConfig
    touches_image_tower = True

    def __init__(self, cfg: IVLPConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.build_text_branch(cfg.n_ctx_text, cfg.depth_text, cfg.ctx_init, cfg.init_std, "method.depth_text")
        self.vision_prompts: LayerPrompts | None = None
        if cfg.n_ctx_vision and cfg.depth_vision:
            vision = self.require_vision()
            depth = prompt_depth(cfg.depth_vision, vision.depth, "method.depth_vision", backbone.model_name)
            self.vision_prompts = LayerPrompts(range(depth), cfg.n_ctx_vision, vision.width, cfg.init_std)
        else:
            self.touches_image_tower = False  # text-only: frozen image features, cacheable

    def vision_layer_prompts(self) -> dict[int, Tensor]:
        """Layer -> (n_v, W_v) vision prompt; empty when the image tower is not prompted."""
        return self.vision_prompts() if self.vision_prompts is not None else {}
