"""What IVLP and MaPLe share (Khattak et al., CVPR 2023, Sec. 3.2; ``docs/methods/ivlp.md``,
``docs/methods/maple.md``): a deep text branch, per-layer vision prompts, and the encode paths that feed
both towers. Not a method itself: nothing here is registered (``@register_method`` stays on the concrete
classes), and the class has no ``name``.

Text branch, layer 0 (the input): [SOS, P_t^0, w_1..w_k, CLASS, ., EOS], P_t^0 (n x W_t) the learned
context initialised from the first n tokens of ``ctx_init``, w_1..w_k the phrase's other tokens (frozen).
Deep layers (MaPLe Sec. 3.2.1, deep language prompting): before text block i = 1..J-1 the n tokens at
positions 1..n are replaced by a fresh P_t^i, [SOS, _, W_i] -> [SOS, P_t^i, W_i]; blocks i >= J keep what
the block before computed there. "Depth J" counts the input layer (``backbone.towers``' convention).

Vision branch: the layer -> (n_v, W_v) prompts of :meth:`DeepPromptMethod.vision_layer_prompts`, appended
before ``ln_pre`` at layer 0 and replacing the last n_v tokens before block i >= 1. Subclasses decide where
they come from: free parameters (IVLP) or the couplers' images of the text prompts (MaPLe, Eq. 5).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.methods.base import PromptMethod
from prompt_learning.prompts.class_prompts import ClassPrompts
from prompt_learning.prompts.context import ContextVectors, phrase_context
from prompt_learning.prompts.deep import LayerPrompts, prompt_depth, split_input_layer


class DeepPromptMethod(PromptMethod):
    """Deep text prompts (``context`` at layer 0, ``text_deep`` at layers 1..J-1, placed by
    ``class_prompts``) and vision prompts by layer (:meth:`vision_layer_prompts`, none by default).

    A subclass's ``__init__`` calls ``super().__init__`` and then :meth:`build_text_branch`, once it knows the
    text depth; it overrides :meth:`vision_layer_prompts` to prompt the image tower.
    """

    context: ContextVectors
    text_deep: LayerPrompts
    class_prompts: ClassPrompts

    def build_text_branch(self, n_ctx: int, depth: int, ctx_init: str, std: float, depth_key: str) -> None:
        """Create the text prompts: P_t^0 (n_ctx, W_t) from the first ``n_ctx`` tokens of ``ctx_init`` (the
        rest of the phrase stays frozen in the prompt) and P_t^1..P_t^{J-1}; ``depth`` = J, cut to the text
        tower's depth (``depth_key`` names the config key in the warning)."""
        text = self.backbone.require_text(f"method {self.name!r}")
        depth = prompt_depth(depth, text.depth, depth_key, self.backbone.model_name)
        phrase = phrase_context(self.backbone, ctx_init, n_ctx, align="left")
        self.context = ContextVectors(n_ctx, text.width, None, phrase.init, std)  # layer 0: (n_t, W_t)
        self.text_deep = LayerPrompts(range(1, depth), n_ctx, text.width, std)  # layers 1..J-1
        self.class_prompts = ClassPrompts(self.backbone, n_ctx, "end", phrase.frozen_ids)

    def text_layer_prompts(self) -> dict[int, Tensor]:
        """Layer -> (n_t, W_t) text prompt; layer 0 is the context after the start token."""
        return {0: self.context.ctx, **self.text_deep()}

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        return {f"text layer {i}": p.detach() for i, p in sorted(self.text_layer_prompts().items())}

    def vision_layer_prompts(self) -> dict[int, Tensor]:
        """Layer -> (n_v, W_v) vision prompt; empty (the default): the image tower runs unprompted."""
        return {}

    def encode_images(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D) normalised features, the vision prompts entering the image tower."""
        first, deep = split_input_layer(self.vision_layer_prompts())
        return F.normalize(self.backbone.encode_image(images, first, deep).float(), dim=-1)  # (B, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """Class prompts [SOS, P_t^0, phrase rest, CLASS, ., EOS] with deep prompts -> (C, D) normalised."""
        self.check_classes(classes)
        first, deep = split_input_layer(self.text_layer_prompts())
        embeds, eot = self.class_prompts.embeddings(classes, first.unsqueeze(0).expand(len(classes), -1, -1))
        shared = self.class_prompts.shared_prefix(classes)  # start token + context: encoded once (Tier C)
        features = self.backbone.encode_text_embeddings(embeds, eot, deep, shared_prefix=shared)  # (C, D)
        return F.normalize(features.float(), dim=-1)  # (C, D)
