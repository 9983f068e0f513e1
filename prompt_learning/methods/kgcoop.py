"""KgCoOp: Knowledge-guided Context Optimization (Yao et al., CVPR 2023; docs/methods/kgcoop.md).

CoOp's context plus a penalty that keeps the learned class features w_c near the hand-crafted
zero-shot ones w_c^clip (both L2-normalised, w^clip from the one frozen backbone):

* ``distance=cosine`` (the official code, default): L_kg = lambda * (1 - mean_c cos(w_c, w_c^clip));
  for unit vectors this is lambda * 1/2 * mean_c ||w_c - w_c^clip||^2.
* ``distance=squared_l2`` (the paper's Eq. 6): L_kg = lambda * mean_c ||w_c - w_c^clip||^2.

The mean runs over the classes of the training split. lambda = 8 in every shipped script. The
official code always initialises from "a photo of a" (M=4).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor

from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import TEMPLATE_LIST, TEMPLATE_TABLE, MethodOutput, register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.prompts.templates import KGCOOP_TEMPLATES, dataset_template, resolve_templates
from prompt_learning.validation import Rule, number

DISTANCES = ("cosine", "squared_l2")


@dataclass
class KgCoOpConfig(CoOpConfig):
    name: str = "kgcoop"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    weight: float = 8.0  # lambda (TRAINER.COOP.W)
    distance: str = "cosine"  # cosine (official code) | squared_l2 (paper)
    templates: list[str] = field(default_factory=lambda: ["dataset"])  # the hand-crafted reference prompts
    # "dataset" resolves through KgCoOp's own table first (DTD: "a photo of a {}, a type of texture.")
    template_overrides: dict[str, str] = field(default_factory=lambda: dict(KGCOOP_TEMPLATES))

    RULES: ClassVar[dict[str, Rule]] = {"weight": number(0), "templates": TEMPLATE_LIST,
                                        "template_overrides": TEMPLATE_TABLE}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distance not in DISTANCES:
            raise ConfigurationError(f"method.distance={self.distance!r}; choose one of {DISTANCES}.")


@register_method
class KgCoOp(CoOp):
    name = "kgcoop"
    Config = KgCoOpConfig

    def extra_losses(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        classes = out.classes or self.train_classes
        templates = resolve_templates(self.cfg.templates, dataset_template(classes, self.cfg.template_overrides))
        reference = self.backbone.zero_shot_text_features(classes.names, templates)  # (C, D)
        if self.cfg.distance == "cosine":
            distance = 1 - (out.text_features * reference).sum(-1).mean()
        else:
            distance = (out.text_features - reference).pow(2).sum(-1).mean()
        return {"kg": self.cfg.weight * distance}
