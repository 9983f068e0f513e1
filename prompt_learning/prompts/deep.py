"""Per-layer ("deep") prompt tokens (VPT-deep, IVLP, MaPLe, PromptSRC; docs/architecture.md, conventions).

"Prompt depth J" counts the input layer: layer 0 is the input prompt (text: the context after the
start token; vision: tokens appended after the positional embedding, before ``ln_pre``) and layers
1..J-1 get fresh tokens that overwrite the prompt slot right before transformer block i. Blocks J..
carry whatever the slot holds. J = 1 is shallow prompting; J = 0 means no prompts in that branch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from prompt_learning.errors import ConfigurationError

log = logging.getLogger(__name__)


def prompt_depth(depth: int, tower_depth: int, key: str, model_name: str) -> int:
    """The depth to use on a tower with ``tower_depth`` blocks: ``depth`` itself, or the tower's depth
    (with a warning) when the config asks for more layers than the tower has."""
    if depth < 0:
        raise ConfigurationError(f"{key}={depth}; a prompt depth counts layers and must be >= 0.")
    if depth > tower_depth:
        log.warning("%s=%d but %s's tower has %d blocks; prompting all %d.", key, depth, model_name, tower_depth,
                    tower_depth)
        return tower_depth
    return depth


class LayerPrompts(nn.Module):
    """Learnable prompt tokens ``(n_tokens, width)`` for each of ``layers``, N(0, std^2) initialised.

    State-dict keys are ``layer_<i>``, so exports say which block each tensor feeds.
    """

    def __init__(self, layers: Iterable[int], n_tokens: int, width: int, std: float = 0.02) -> None:
        super().__init__()
        self.prompts = nn.ParameterDict({f"layer_{i}": nn.Parameter(torch.empty(n_tokens, width).normal_(0.0, std))
                                         for i in layers})

    @property
    def layers(self) -> list[int]:
        return [int(k.removeprefix("layer_")) for k in self.prompts]

    def __len__(self) -> int:
        return len(self.prompts)

    def forward(self) -> dict[int, Tensor]:
        """Layer index -> (n_tokens, width) prompt."""
        return {int(k.removeprefix("layer_")): p for k, p in self.prompts.items()}


def split_input_layer(prompts: dict[int, Tensor]) -> tuple[Tensor | None, dict[int, Tensor]]:
    """``{0: input prompt, i: deep prompt}`` -> (input prompt or None, ``{i >= 1: deep prompt}``)."""
    return prompts.get(0), {i: p for i, p in prompts.items() if i > 0}
