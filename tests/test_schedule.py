"""The Dassl learning-rate schedule (docs/protocols.md, training schedule), verified against PRE's committed log values."""

from __future__ import annotations

import math

import pytest
import torch

from prompt_learning.engine.schedule import build_sgd_cosine, lr_at_epoch


def test_published_values() -> None:
    assert lr_at_epoch(0, 0.002, 50) == 1e-5  # epoch 1: constant warm-up
    assert lr_at_epoch(1, 0.002, 50) == pytest.approx(0.002)  # epoch 2: full rate
    assert lr_at_epoch(49, 0.002, 50) == pytest.approx(7.8853e-6, rel=1e-4)  # epoch 50


def test_scheduler_steps_per_epoch_match_formula() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = build_sgd_cosine([param], lr=0.01, momentum=0.9, weight_decay=5e-4, max_epochs=5,
                                            warmup_epochs=1, warmup_lr=1e-5)
    seen = []
    for _ in range(5):
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    expected = [1e-5] + [0.01 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 5)) for e in range(1, 5)]
    assert seen == pytest.approx(expected)
    assert optimizer.param_groups[0]["momentum"] == 0.9 and optimizer.param_groups[0]["weight_decay"] == 5e-4
