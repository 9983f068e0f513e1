"""IVLP: Independent Vision-Language Prompting, the baseline of MaPLe (Khattak et al. CVPR 2023,
Sec. 4; methods.md §2.4, §2.7).

Two uncoupled deep-prompt branches:
* text: context P_t^0 (n_t x W_t) after the start token, initialised from ``ctx_init`` (first n_t
  tokens learnable, the rest of the phrase frozen), plus fresh P_t^i replacing positions 1..n_t
  before text block i = 1..J_t-1;
* vision: P_v^0 (n_v x W_v) appended before ``ln_pre`` and fresh P_v^i replacing the last n_v tokens
  before vision block i = 1..J_v-1.
Loss: cross-entropy. Presets (methods.md §3.1): MaPLe repo 2+2 tokens, depth 12/12 (30,720
parameters on ViT-B/16, the default here); PromptSRC repo 4+4 tokens, depth 9/9 (46,080).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, PromptMethod, register_method
from prompt_learning.prompts.class_prompts import ClassPrompts
from prompt_learning.prompts.context import ContextVectors, phrase_context
from prompt_learning.prompts.deep import LayerPrompts, prompt_depth, split_input_layer


@dataclass
class IVLPConfig(MethodConfig):
    name: str = "ivlp"
    n_ctx_text: int = 2  # text prompt tokens per layer
    n_ctx_vision: int = 2  # vision prompt tokens per layer (0: text-only, as method=language_deep)
    depth_text: int = 12  # prompted text layers, counting the input layer
    depth_vision: int = 12  # prompted vision layers, counting the input layer
    ctx_init: str = "a photo of a"  # first n_ctx_text tokens initialise the text context; the rest stay frozen
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.n_ctx_text < 1 or self.depth_text < 1:
            raise ConfigurationError(f"method.n_ctx_text={self.n_ctx_text}, method.depth_text={self.depth_text}: "
                                     f"{self.name} needs text prompts; for vision-only prompts use method=vpt.")
        if self.n_ctx_vision < 0 or self.depth_vision < 0:
            raise ConfigurationError("method.n_ctx_vision and method.depth_vision must be >= 0.")


@register_method
class IVLP(PromptMethod):
    """Text branch (``context`` + ``text_deep``) and vision branch (``vision_prompts``); subclasses
    replace ``vision_layer_prompts`` (MaPLe couples it to the text branch)."""

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

    def build_text_branch(self, n_ctx: int, depth: int, ctx_init: str, std: float, depth_key: str) -> None:
        text = self.backbone.require_text(f"method {self.name!r}")
        depth = prompt_depth(depth, text.depth, depth_key, self.backbone.model_name)
        phrase = phrase_context(self.backbone, ctx_init, n_ctx, align="left")
        self.context = ContextVectors(n_ctx, text.width, None, phrase.init, std)  # layer 0: (n_t, W_t)
        self.text_deep = LayerPrompts(range(1, depth), n_ctx, text.width, std)  # layers 1..J_t-1
        self.class_prompts = ClassPrompts(self.backbone, n_ctx, "end", phrase.frozen_ids)

    def text_layer_prompts(self) -> dict[int, Tensor]:
        """Layer -> (n_t, W_t) text prompt; layer 0 is the context after the start token."""
        return {0: self.context.ctx, **self.text_deep()}

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        return {f"text layer {i}": p.detach() for i, p in sorted(self.text_layer_prompts().items())}

    def vision_layer_prompts(self) -> dict[int, Tensor]:
        """Layer -> (n_v, W_v) vision prompt; empty when the image tower is not prompted."""
        return self.vision_prompts() if self.vision_prompts is not None else {}

    def encode_images(self, images: Tensor) -> Tensor:
        first, deep = split_input_layer(self.vision_layer_prompts())
        return F.normalize(self.backbone.encode_image(images, first, deep).float(), dim=-1)  # (B, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        self.check_classes(classes)
        first, deep = split_input_layer(self.text_layer_prompts())
        embeds, eot = self.class_prompts.embeddings(classes, first.unsqueeze(0).expand(len(classes), -1, -1))
        shared = self.class_prompts.shared_prefix(classes)  # start token + context: encoded once (Tier C)
        features = self.backbone.encode_text_embeddings(embeds, eot, deep, shared_prefix=shared)  # (C, D)
        return F.normalize(features.float(), dim=-1)  # (C, D)
