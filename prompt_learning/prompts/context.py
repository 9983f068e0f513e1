"""Learnable context vectors (CoOp, Zhou et al. 2022, Eq. 2: t = [V]_1 ... [V]_M [CLASS]).

Unified context is one (M, W) tensor shared by all classes; class-specific context (CSC) is
(C, M, W). Initialisation: N(0, std^2) (std 0.02 in the paper) or the token embeddings of a phrase
such as "a photo of a".
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContextVectors(nn.Module):
    """M learnable token embeddings of width W, optionally one set per class."""

    def __init__(self, n_ctx: int, width: int, n_classes: int | None = None, init: Tensor | None = None,
                 std: float = 0.02) -> None:
        super().__init__()
        shape = (n_ctx, width) if n_classes is None else (n_classes, n_ctx, width)
        if init is not None:
            ctx = init.detach().float().clone().expand(shape).clone()
        else:
            ctx = torch.empty(shape).normal_(0.0, std)
        self.ctx = nn.Parameter(ctx)  # (M, W) or (C, M, W)

    @property
    def class_specific(self) -> bool:
        return self.ctx.dim() == 3

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    def forward(self, n_classes: int) -> Tensor:
        """(C, M, W) context for ``n_classes`` classes."""
        if self.class_specific:
            if self.ctx.shape[0] != n_classes:
                raise ValueError(f"class-specific context was learned for {self.ctx.shape[0]} classes, "
                                 f"asked for {n_classes}")
            return self.ctx
        return self.ctx.unsqueeze(0).expand(n_classes, -1, -1)
