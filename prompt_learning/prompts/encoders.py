"""Prompt reparameterisation encoders (PRE, Minh et al. 2023): context c -> E(c) + c.

The encoder runs over the M context vectors as a length-M sequence; its output keeps the width W,
and a residual connection keeps E(c) + c close to the initial phrase embedding at the start.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ENCODERS = ("lstm", "mlp")


class PromptEncoder(nn.Module):
    """``lstm``: one bidirectional LSTM layer, hidden W/2 per direction (the shipped PRE setting,
    ``ENCODER=LSTM1``). ``mlp``: Linear(W -> hidden) -> ReLU -> Linear(hidden -> W) per token."""

    def __init__(self, kind: str, width: int, mlp_hidden: int = 64, residual: bool = True) -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"prompt encoder {kind!r}; choose one of {ENCODERS}")
        self.kind, self.residual = kind, residual
        if kind == "lstm":
            if width % 2:
                raise ValueError(f"a bidirectional LSTM encoder needs an even text width, got {width}")
            self.net: nn.Module = nn.LSTM(width, width // 2, num_layers=1, bidirectional=True, batch_first=True)
        else:
            self.net = nn.Sequential(nn.Linear(width, mlp_hidden), nn.ReLU(), nn.Linear(mlp_hidden, width))

    def forward(self, ctx: Tensor) -> Tensor:
        """(M, W) or (C, M, W) context -> reparameterised context of the same shape."""
        if self.kind == "lstm":
            # In float32 outside autocast: a few tokens cost nothing, and oneDNN has no bf16 LSTM on CPUs
            # without AVX-512 (autocast to bf16 there fails with "could not create a primitive descriptor").
            with torch.autocast(ctx.device.type, enabled=False):
                out, _ = self.net((ctx if ctx.dim() == 3 else ctx.unsqueeze(0)).float())  # (C or 1, M, W)
            out = out if ctx.dim() == 3 else out.squeeze(0)
        else:
            out = self.net(ctx)  # (M, W)
        return out + ctx if self.residual else out
