"""Gaussian prompt aggregation (PromptSRC, Khattak et al. ICCV 2023, Eq. 8):
P_GPA = sum_{e=1}^{E} w_e P_e with w_e proportional to N(e; mu, sigma^2), normalised to sum to 1.

The running sum is kept in buffers (saved in training checkpoints, so an interrupted run resumes
with it) and covers the learnable prompt tensors only, never the frozen backbone (unlike the
official code, which re-weights the whole state dict; docs/methods/promptsrc.md).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def gaussian_epoch_weights(epochs: int, mean: float, std: float) -> Tensor:
    """(E,) weights w_e, e = 1..E, proportional to exp(-(e - mean)^2 / (2 std^2)), summing to 1."""
    e = torch.arange(1, epochs + 1, dtype=torch.float64)
    w = torch.exp(-((e - mean) ** 2) / (2 * std**2)) / (std * math.sqrt(2 * math.pi))
    return w / w.sum()


class GaussianPromptAggregation(nn.Module):
    """Running Gaussian-weighted sum of a fixed set of named tensors (a method's learnable prompts)."""

    def __init__(self, params: dict[str, Tensor], mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std
        self.names = list(params)
        for name, p in params.items():
            self.register_buffer(self._key(name), torch.zeros_like(p, dtype=torch.float32))

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    @torch.no_grad()
    def accumulate(self, params: dict[str, Tensor], epoch: int, epochs: int) -> None:
        """Add w_epoch * P for 1-based ``epoch`` of ``epochs``; after the last epoch, load the sum into P."""
        weight = float(gaussian_epoch_weights(epochs, self.mean, self.std)[epoch - 1])
        for name in self.names:
            getattr(self, self._key(name)).add_(params[name].detach().float(), alpha=weight)
        if epoch == epochs:
            for name in self.names:
                params[name].copy_(getattr(self, self._key(name)))
