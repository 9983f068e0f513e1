"""CoCoOp: Conditional Context Optimization (Zhou et al., "Conditional Prompt Learning for
Vision-Language Models", CVPR 2022).

Eq. (4): each context vector is shifted by an image-dependent token, v_m(x) = v_m + pi(x), with
pi = h_theta(f(x)) the Meta-Net (``prompts.meta_net``) applied to the normalised image feature.
Eq. (5): p(y=c|x) = exp(cos(g(t_c(x)), f(x)) / tau) / sum_j exp(cos(g(t_j(x)), f(x)) / tau), so every
image needs its own C text-encoder passes: class features are (B, C, D).

Cost (docs/performance.md, batched CoCoOp): the official code loops over images, one text-encoder call of C prompts each,
at the full 77 tokens. Here the B*C prompts of a batch go through the text tower together, each image's
start token + context encoded once and only the class suffixes per prompt (Tier C). A batch whose B*C
exceeds ``max_chunk_prompts`` is split into chunks of images; while gradients are on, each chunk then
runs under activation checkpointing, so the stored activations are those of one chunk's prompts, not of
all B*C (recomputed chunk by chunk in backward, the same gradients). Official defaults (docs/methods/cocoop.md):
M=4 initialised from "a photo of a", Meta-Net D -> D/16 -> W, batch size 1, 10 epochs, lr 0.002.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.prompts.meta_net import MetaNet
from prompt_learning.validation import Rule, integer


@dataclass
class CoCoOpConfig(CoOpConfig):
    name: str = "cocoop"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    meta_net_reduction: int = 16  # hidden width of the Meta-Net = embed_dim // reduction (512 -> 32)
    images_per_chunk: int | None = None  # images whose C prompts are encoded together; None: from the budget
    max_chunk_prompts: int = 4096  # budget for images_per_chunk=None: chunk = max(1, this // C) images
    activation_checkpointing: bool = True  # with several chunks, keep training memory at one chunk's prompts

    RULES: ClassVar[dict[str, Rule]] = {"meta_net_reduction": integer(1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_image_conditioned_context(self)


def check_image_conditioned_context(cfg: CoOpConfig) -> None:
    """The settings every image-conditioned context shares (CoCoOp, GOPro): one context for all classes, and a
    valid chunking of the B x C prompts (``images_per_chunk``, ``max_chunk_prompts``)."""
    if cfg.class_specific:
        raise ConfigurationError(f"method={cfg.name} has one context shared by all classes; drop "
                                 "method.class_specific=true.")
    if cfg.images_per_chunk is not None and cfg.images_per_chunk < 1:
        raise ConfigurationError(f"method.images_per_chunk={cfg.images_per_chunk}; it must be >= 1 "
                                 "(or null to size chunks from method.max_chunk_prompts).")
    if cfg.max_chunk_prompts < 1:
        raise ConfigurationError(f"method.max_chunk_prompts={cfg.max_chunk_prompts}; it must be >= 1.")


@register_method
class CoCoOp(CoOp):
    name = "cocoop"
    Config = CoCoOpConfig
    conditional_text = True

    def __init__(self, cfg: CoCoOpConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.meta_net = MetaNet(backbone.embed_dim, backbone.text_width, cfg.meta_net_reduction)

    def images_per_chunk(self, n_classes: int) -> int:
        """Images whose ``n_classes`` prompts are encoded in one text-tower call."""
        if self.cfg.images_per_chunk is not None:
            return self.cfg.images_per_chunk
        return max(1, self.cfg.max_chunk_prompts // max(1, n_classes))

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """(B, D) normalised image features -> (B, C, D) image-conditioned class features."""
        if image_features is None:
            raise ValueError("CoCoOp's class features depend on the image: pass image_features (B, D).")
        self.check_classes(classes)
        shift = self.meta_net(image_features.to(self.context.ctx.dtype))  # (B, W)
        ctx = self.context.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (B, M, W)
        return self.class_prompts.features_in_chunks(classes, ctx, self.images_per_chunk(len(classes)),
                                                     self.cfg.activation_checkpointing)  # (B, C, D)
