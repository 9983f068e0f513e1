"""Tip-Adapter-F: Tip-Adapter with the cache keys fine-tuned (Zhang et al., ECCV 2022; docs/methods/tip_adapter.md).

The keys F (NK, D), initialised from the cache of ``prepare``, become the weight of a linear layer without bias
and are trained by SGD-style descent on cross-entropy of the Tip-Adapter logits
  s * f^T W + alpha * exp(-beta * (1 - f^T F^T)) L
with alpha = ``init_alpha`` and beta = ``init_beta`` fixed while training (the trained keys are not
re-normalised, so affinities may exceed 1, as in the official code). Optimisation as the official ``main.py``:
AdamW (lr 1e-3, eps 1e-4, torch's default weight decay 0.01), a cosine schedule stepped per iteration over
epochs x iterations, batch 256 (the presets), the cache augmentation for the training images. After the last
epoch alpha and beta are searched again on the validation split (``calibrate``).

Selection: the keys after the **last** epoch are reported. The official code evaluates every epoch on the test
set, reloads the best-on-test keys and reports the best of that and the re-searched result; that selects on
test and is never done here. results.json records the selection (``calibrate.selection``).
Trainable parameters: NK x D (16-shot ImageNet on ViT-B/16: 16,000 x 512 = 8,192,000).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from prompt_learning.methods.base import register_method
from prompt_learning.methods.stages import Optimization, StageData
from prompt_learning.methods.tip_adapter import TipAdapter, TipAdapterConfig
from prompt_learning.validation import Rule, number


@dataclass
class TipAdapterFConfig(TipAdapterConfig):
    name: str = "tip_adapter_f"
    lr: float = 0.001
    eps: float = 1e-4  # AdamW's epsilon (the official fp16 model needs more than torch's 1e-8)
    weight_decay: float = 0.01  # torch's AdamW default, which the official code keeps

    RULES: ClassVar[dict[str, Rule]] = {"lr": number(above=0), "eps": number(above=0), "weight_decay": number(0)}


@register_method
class TipAdapterF(TipAdapter):
    name = "tip_adapter_f"
    Config = TipAdapterFConfig
    trainable = True
    keys_are_learned = True

    def configure_optimization(self, optim: Mapping[str, Any], max_epochs: int, total_steps: int) -> Optimization:
        """AdamW on the keys with a cosine over every iteration of the fit (CosineAnnealingLR, T_max = steps)."""
        optimizer = torch.optim.AdamW([self.cache_keys], lr=self.cfg.lr, eps=self.cfg.eps,
                                      weight_decay=self.cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(total_steps, 1))
        return Optimization(optimizer, scheduler, "step")

    def calibrate(self, data: StageData) -> dict[str, Any]:
        return {**super().calibrate(data), "selection": "the keys after the last epoch (no selection on any split)"}
