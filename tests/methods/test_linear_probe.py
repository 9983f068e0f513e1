"""Linear probe: the logistic-regression optimum, the C search on val, and the few-shot run."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning.engine.run import train_and_test
from prompt_learning.methods import create_method
from prompt_learning.methods.linear_probe import fit_logistic_regression

from ..conftest import CLASSES


def blobs(n_per_class: int, seed: int, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, dim, generator=torch.Generator().manual_seed(0))
    y = torch.arange(4).repeat_interleave(n_per_class)
    x = centres[y] + 1.5 * torch.randn(len(y), dim, generator=g)
    return F.normalize(x, dim=-1), y


def test_fit_reaches_the_regularised_optimum() -> None:
    x, y = blobs(10, seed=1)
    c = 0.5
    weight, bias = fit_logistic_regression(x, y, 4, c, max_iter=1000)
    w, b = weight.double().requires_grad_(), bias.double().requires_grad_()
    objective = F.cross_entropy(x.double() @ w.T + b, y) + w.pow(2).sum() / (2 * c * len(y))
    gw, gb = torch.autograd.grad(objective, (w, b))
    assert gw.abs().max() < 1e-5 and gb.abs().max() < 1e-5  # stationary point of a strictly convex objective
    weaker, _ = fit_logistic_regression(x, y, 4, 100 * c, max_iter=1000)
    assert weaker.norm() > weight.norm()  # larger C = weaker penalty = larger weights


def test_c_search_keeps_the_best_validation_fit(tiny_backbone) -> None:
    method = create_method({"name": "linear_probe", "search_steps": 3}, tiny_backbone, CLASSES)
    method.weight.data = torch.zeros(4, 32)  # features below live in 32 dimensions
    (x, y), (xv, yv) = blobs(6, seed=1), blobs(6, seed=2)
    summary = method.fit_features((x, y), (xv, yv))
    accuracy = float(((xv @ method.weight.T + method.bias).argmax(-1) == yv).float().mean()) * 100
    assert abs(accuracy - summary["val_acc"]) < 1e-6
    for c in method.cfg.c_grid:  # no grid value does better on val
        w, b = fit_logistic_regression(x, y, 4, c, 1000)
        assert float(((xv @ w.T + b).argmax(-1) == yv).float().mean()) * 100 <= summary["val_acc"] + 1e-6
    assert summary["fits"] > len(method.cfg.c_grid)  # the bisection tried C values beyond the grid


def test_few_shot_run_fits_on_features_and_records_c(run_cfg) -> None:
    record = train_and_test(run_cfg("method=linear_probe", "protocol=few_shot", "shots=4", "method.search_steps=2"))
    assert record["fit"]["C"] > 0 and 0 <= record["fit"]["val_acc"] <= 100
    assert set(record["metrics"]) == {"all"} and 0 <= record["metrics"]["all"]["acc"] <= 100


def test_fixed_c_without_a_val_split(tiny_backbone) -> None:
    import pytest

    from prompt_learning.errors import ConfigurationError

    (x, y) = blobs(6, seed=1)
    searching = create_method({"name": "linear_probe"}, tiny_backbone, CLASSES)
    searching.weight.data = torch.zeros(4, 32)
    with pytest.raises(ConfigurationError, match="method.c="):
        searching.fit_features((x, y), None)
    fixed = create_method({"name": "linear_probe", "c": 0.5}, tiny_backbone, CLASSES)
    fixed.weight.data = torch.zeros(4, 32)
    assert fixed.fit_features((x, y), None) == {"C": 0.5, "val_acc": None, "fits": 1}
    weight, bias = fit_logistic_regression(x, y, 4, 0.5, 1000)
    torch.testing.assert_close(fixed.weight.data, weight)
