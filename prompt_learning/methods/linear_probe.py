"""Linear probe: multinomial logistic regression on frozen CLIP image features (Radford et al. 2021,
Sec. 3.2; CoOp's ``lpclip`` baseline, docs/methods/linear_probe.md).

logits = W f(x) + b with f(x) the L2-normalised image feature (lpclip fits raw features; normalising
changes only how strongly a given C regularises, and C is searched on the validation split). W and
b minimise  mean_n CE(W f_n + b, y_n) + ||W||^2 / (2 C N)  (scikit-learn's L2 objective divided by
C N), solved with L-BFGS. C is chosen as in lpclip: the best of a coarse grid 1e6 .. 1e-6 on
validation accuracy, refined by ``search_steps`` bisection steps in log10(C) between C/10 and C*10.

The head exists for the training classes only: base-to-new and cross-dataset are refused at setup.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, PromptMethod, register_method
from prompt_learning.methods.stages import StageData, extract_features
from prompt_learning.validation import Rule, integer

log = logging.getLogger(__name__)


@dataclass
class LinearProbeConfig(MethodConfig):
    name: str = "linear_probe"
    c_grid: list[float] = field(default_factory=lambda: [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6])
    search_steps: int = 8  # bisection steps around the best grid value
    max_iter: int = 1000  # L-BFGS iterations per fit
    c: float | None = None  # a fixed C: no search (needed where there is no val split, e.g. ImageNet)

    RULES: ClassVar[dict[str, Rule]] = {"search_steps": integer(0), "max_iter": integer(1)}

    def __post_init__(self) -> None:
        if self.c is not None and self.c <= 0:
            raise ConfigurationError(f"method.c={self.c}; C must be positive.")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise ConfigurationError(f"method.c_grid={self.c_grid}; give positive inverse regularisation strengths.")


def fit_logistic_regression(x: Tensor, y: Tensor, n_classes: int, c: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """(N, D) features, (N,) labels -> W (C, D), b (C,) minimising mean CE + ||W||^2 / (2 c N)."""
    x64, n = x.double(), x.shape[0]
    weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x64 @ weight.T + bias, y) + weight.pow(2).sum() / (2 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach().float(), bias.detach().float()


@register_method
class LinearProbe(PromptMethod):
    name = "linear_probe"
    Config = LinearProbeConfig
    supports_unseen_classes = False
    fits_on_features = True
    fits_in_closed_form = True

    def __init__(self, cfg: LinearProbeConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.weight = nn.Parameter(torch.zeros(len(classes), backbone.embed_dim))  # (C, D)
        self.bias = nn.Parameter(torch.zeros(len(classes)))  # (C,)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        self.check_classes(classes)
        return self.weight  # (C, D): the head's rows play the part of class features

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        return image_features @ text_features.T + self.bias  # (B, C)

    @torch.no_grad()
    def _set_head(self, weight: Tensor, bias: Tensor) -> None:
        self.weight.copy_(weight.to(self.weight))
        self.bias.copy_(bias.to(self.bias))

    def _accuracy(self, weight: Tensor, bias: Tensor, x: Tensor, y: Tensor) -> float:
        return float(((x @ weight.T + bias).argmax(-1) == y).float().mean()) * 100

    def fit(self, data: StageData) -> dict[str, Any]:
        """The closed-form stage, as lpclip: frozen features of the training images seen through the eval
        transform (no augmentation), C searched on the validation split's features; extracted on the run's
        device, fitted on the CPU in float64."""
        train = extract_features(self, data.train_loader(augment=False), data.device)
        val_batches = data.val_loader()
        val = None if val_batches is None else extract_features(self, val_batches, data.device)
        log.info("Fitting %s on %d frozen image features", self.name, train[0].shape[0])
        return self.fit_features(train, val)

    def fit_features(self, train: tuple[Tensor, Tensor], val: tuple[Tensor, Tensor] | None) -> dict[str, Any]:
        """Search C on ``val`` as lpclip does (or take ``method.c``), then keep the head fitted with it."""
        (x, y), n_cls = train, len(self.train_classes)
        if self.cfg.c is not None:
            self._set_head(*fit_logistic_regression(x, y, n_cls, self.cfg.c, self.cfg.max_iter))
            return {"C": self.cfg.c, "val_acc": None, "fits": 1}
        if val is None or val[0].shape[0] == 0:
            raise ConfigurationError("method=linear_probe searches its regularisation C on a validation split, and "
                                     "this dataset has none (ImageNet's val is its test set, never used for tuning); "
                                     "give a fixed value, e.g. method.c=0.316.")
        (xv, yv), steps = val, self.cfg.search_steps
        fits: dict[float, tuple[Tensor, Tensor, float]] = {}

        def fit(c: float) -> float:
            if c not in fits:
                w, b = fit_logistic_regression(x, y, n_cls, c, self.cfg.max_iter)
                fits[c] = (w, b, self._accuracy(w, b, xv, yv))
                log.info("linear probe: C=%.3g val acc %.2f", c, fits[c][2])
            return fits[c][2]

        best = max(self.cfg.c_grid, key=fit)  # the first best in grid order, as np.argmax in lpclip
        left, right = math.log10(best) - 1, math.log10(best) + 1
        for _ in range(steps):  # move the worse end of [left, right] to the midpoint (log10 C)
            middle = (left + right) / 2
            if fit(10**left) < fit(10**right):
                left = middle
            else:
                right = middle
        chosen = max((10**left, 10**right, best), key=lambda c: fit(c))
        weight, bias, val_acc = fits[chosen]
        self._set_head(weight, bias)
        return {"C": chosen, "val_acc": val_acc, "fits": len(fits)}
