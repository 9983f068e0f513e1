"""SGD with a cosine schedule behind a constant warm-up, stepped once per epoch, as Dassl does for every official method (docs/methods/README.md).

With e the 1-based epoch, T = max_epochs and one warm-up epoch at 1e-5 (Dassl's WARMUP_RECOUNT):
lr(1) = 1e-5 and lr(e >= 2) = base_lr * (1 + cos(pi * (e - 2) / T)) / 2, so epoch 2 runs at the full
rate and the last epoch's rate is small but non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def lr_at_epoch(epoch: int, base_lr: float, max_epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Learning rate of 0-based ``epoch``."""
    if epoch < warmup_epochs:
        return warmup_lr
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))


def build_sgd_cosine(params: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
                     max_epochs: int, warmup_epochs: int, warmup_lr: float):
    optimizer = torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)
    factor = lambda epoch: lr_at_epoch(epoch, lr, max_epochs, warmup_epochs, warmup_lr) / lr  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
