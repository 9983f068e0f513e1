"""Deep language prompting: IVLP with the vision branch off (MaPLe, Khattak et al. CVPR 2023, the
"language prompting" baseline; ``docs/methods/language_deep.md``).

Text prompts of n tokens at the input (after the start token, initialised from "a photo of a") and
fresh ones before text blocks 1..J-1. The image tower is untouched, so image features are frozen.
Official config ``IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml``: 4 tokens, depth 12 ->
12 x 4 x 512 = 24,576 parameters on ViT-B/16.
"""

from __future__ import annotations

from dataclasses import dataclass

from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import register_method
from prompt_learning.methods.ivlp import IVLP, IVLPConfig


@dataclass
class LanguageDeepConfig(IVLPConfig):
    name: str = "language_deep"
    n_ctx_text: int = 4
    depth_text: int = 12
    n_ctx_vision: int = 0
    depth_vision: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_ctx_vision or self.depth_vision:
            raise ConfigurationError("method=language_deep prompts the text tower only; for vision prompts as well "
                                     "use method=ivlp.")


@register_method
class LanguageDeep(IVLP):
    name = "language_deep"
    Config = LanguageDeepConfig
    touches_image_tower = False
