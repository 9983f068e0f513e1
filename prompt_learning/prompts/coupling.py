"""Text-to-vision prompt couplers (MaPLe, Khattak et al. CVPR 2023, Eq. 5: P~_k = F_k(P_k)).

Layer k's vision prompts are a linear function of the same layer's text prompts, so the vision
branch has no free prompt parameters and its gradients flow into the text prompts. As in the
official code (docs/methods/maple.md) layer 0 has its own coupler and the J-1 deeper couplers
start as copies of one randomly initialised ``Linear``.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn


class TextToVisionCouplers(nn.Module):
    """One ``Linear(text_width -> vision_width)`` per prompted layer 0..depth-1."""

    def __init__(self, depth: int, text_width: int, vision_width: int) -> None:
        super().__init__()
        deep = nn.Linear(text_width, vision_width)
        self.layers = nn.ModuleList([nn.Linear(text_width, vision_width)]
                                    + [copy.deepcopy(deep) for _ in range(depth - 1)])

    def forward(self, text_prompts: dict[int, Tensor]) -> dict[int, Tensor]:
        """Layer -> (n, text_width) text prompts  ->  layer -> (n, vision_width) vision prompts."""
        return {i: self.layers[i](p) for i, p in text_prompts.items()}
