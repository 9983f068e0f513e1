"""SGD with a cosine schedule behind a constant warm-up, stepped once per epoch, as Dassl does for every official method (docs/methods/README.md).

With e the 1-based epoch, T = max_epochs and one warm-up epoch at 1e-5 (Dassl's WARMUP_RECOUNT):
lr(1) = 1e-5 and lr(e >= 2) = base_lr * (1 + cos(pi * (e - 2) / T)) / 2, so epoch 2 runs at the full
rate and the last epoch's rate is small but non-zero.

Parameter groups (a method's own optimisation, e.g. MoCoOp's backbone LayerNorm copies at lr x 0.1) each follow
the cosine from their own rate; the warm-up rate is the same constant for every group, as Dassl's
ConstantWarmupScheduler sets it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def lr_at_epoch(epoch: int, base_lr: float, max_epochs: int, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Learning rate of 0-based ``epoch``."""
    if epoch < warmup_epochs:
        return warmup_lr
    return base_lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max_epochs))


def build_sgd_cosine(params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], lr: float, momentum: float,
                     weight_decay: float, max_epochs: int, warmup_epochs: int, warmup_lr: float):
    """SGD and its per-epoch warm-up cosine. ``params``: tensors, or parameter groups (dicts with ``params`` and
    optionally their own ``lr``, else ``lr``). A group whose rate is 0 stays at 0, warm-up included (frozen)."""
    optimizer = torch.optim.SGD(list(params), lr=lr, momentum=momentum, weight_decay=weight_decay)
    factors = [lambda epoch, base=group["lr"]: (lr_at_epoch(epoch, base, max_epochs, warmup_epochs, warmup_lr) / base
                                                if base else 0.0)
               for group in optimizer.param_groups]
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
