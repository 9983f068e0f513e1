"""An example of a method defined outside the package: CoOp with a learned logit scale.

CoOp keeps CLIP's temperature fixed (logit scale 100 for the OpenAI weights). Here the scale is learned
too, as log(s) so that it stays positive: logits = exp(log_s) * cos(f(x), g(t_c)), with log_s initialised
at the backbone's own log scale, so the first step equals CoOp's. Everything else is CoOp's.

Train it from a checkout, without touching ``prompt_learning/``:

    uv run scripts/train.py plugins=[examples/coop_learned_scale.py] method=coop_scale protocol=few_shot

``plugins=`` imports this file before the config is composed; ``@register_method`` makes it
``method=coop_scale``; its config is ``CoOpScaleConfig`` (no YAML needed: its defaults are the config, and
every field is an override, e.g. ``method.n_ctx=4``). To load its export in another program, import this
module first, then call ``PromptedCLIP.from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.methods import register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig


@dataclass
class CoOpScaleConfig(CoOpConfig):
    name: str = "coop_scale"
    n_ctx: int = 4


@register_method
class CoOpLearnedScale(CoOp):
    """CoOp's context vectors (M, W) plus a learned scalar log-scale."""

    name = "coop_scale"
    Config = CoOpScaleConfig

    def __init__(self, cfg: CoOpScaleConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.log_scale = nn.Parameter(backbone.logit_scale.detach().float().log().reshape(()))  # ()

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(B, D) x (C, D) -> (B, C): exp(log_s) * cosine similarity (+ the backbone's bias, if any)."""
        cos = image_features @ text_features.T  # (B, C)
        logits = torch.exp(self.log_scale) * cos
        bias = self.backbone.logit_bias
        return logits if bias is None else logits + bias
