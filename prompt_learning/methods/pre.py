"""PRE: Prompt learning with a Reparameterisation Encoder (Minh et al., 2023; docs/methods/pre.md).

CoOp's context c (M x W, from "a photo of a") is not fed to the text encoder directly: the prompt is
E(c) + c, where E is a prompt encoder run over the M context vectors as a sequence
(``prompts.encoders``; the shipped setting is one bidirectional LSTM layer with W/2 hidden units per
direction and a residual connection). Everything else is CoOp. Trainable parameters on ViT-B/16:
ctx 4 x 512 = 2,048 + LSTM 2 x 4 x (256 x (512 + 256) + 2 x 256) = 1,576,960 -> 1,579,008.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.prompts.encoders import ENCODERS, PromptEncoder
from prompt_learning.validation import Rule, integer


@dataclass
class PREConfig(CoOpConfig):
    name: str = "pre"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    encoder: str = "lstm"  # lstm (ENCODER=LSTM1) | mlp (MLP1: W -> mlp_hidden -> W)
    mlp_hidden: int = 64
    residual: bool = True

    RULES: ClassVar[dict[str, Rule]] = {"mlp_hidden": integer(1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise ConfigurationError(f"method.encoder={self.encoder!r}; choose one of {ENCODERS}.")


@register_method
class PRE(CoOp):
    name = "pre"
    Config = PREConfig

    def __init__(self, cfg: PREConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.encoder = PromptEncoder(cfg.encoder, backbone.text_width, cfg.mlp_hidden, cfg.residual)

    def class_context(self, n_classes: int) -> Tensor:
        encoded = self.encoder(self.context.ctx)  # (M, W), or (C, M, W) for class-specific context
        return encoded if encoded.dim() == 3 else encoded.unsqueeze(0).expand(n_classes, -1, -1)  # (C, M, W)

    def test_time_parameters(self) -> list[nn.Parameter]:
        """TPT tunes the context c, through the frozen encoder: the prompt vectors, not the encoder's weights."""
        return [self.context.ctx]
