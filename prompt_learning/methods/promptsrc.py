"""PromptSRC: Self-Regulating Prompts (Khattak et al., "Self-regulating Prompts: Foundational Model
Adaptation without Forgetting", ICCV 2023; docs/methods/promptsrc.md).

Prompts are IVLP's (4 + 4 tokens, depth 9/9, text context from "a photo of a"). Three
self-consistency terms tie the prompted model to the frozen one, all computed with the one frozen
backbone (no second copy):
* Eq. (3)  L_SCL-text  = lambda_1 * mean |T - T0|: T prompted class features, T0 the mean of the
  *un-normalised* frozen features over 60 templates, normalised afterwards (lambda_1 = 25);
* Eq. (4)  L_SCL-image = lambda_2 * mean |I - I0|: prompted vs frozen image features (lambda_2 = 10);
* Eq. (5)  L_SCL-logits = KL(p0 || p) summed and divided by the number of logits B*C, with
  p = softmax(z), p0 = softmax(z0), z0 = s * I0 T0^T the zero-shot logits (weight 1).
Total: CE + the three terms. Eq. (8), Gaussian prompt aggregation: after epoch e the prompts are added
to a running sum with weight w_e ~ N(e; mu, sigma^2) (normalised over the E epochs) and the sum
replaces the prompts after the last epoch (``prompts.aggregation``). Base-to-new: mu=15, sigma=1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.methods.base import TEMPLATE_LIST, MethodOutput, register_method
from prompt_learning.methods.ivlp import IVLP, IVLPConfig
from prompt_learning.prompts.aggregation import GaussianPromptAggregation
from prompt_learning.prompts.templates import resolve_templates
from prompt_learning.validation import Rule, number


@dataclass
class PromptSRCConfig(IVLPConfig):
    name: str = "promptsrc"
    n_ctx_text: int = 4
    n_ctx_vision: int = 4
    depth_text: int = 9
    depth_vision: int = 9
    text_loss_weight: float = 25.0  # lambda_1 (TEXT_LOSS_WEIGHT)
    image_loss_weight: float = 10.0  # lambda_2 (IMAGE_LOSS_WEIGHT)
    logit_loss_weight: float = 1.0
    gpa_mean: float = 15.0  # mu (GPA_MEAN), in 1-based epochs
    gpa_std: float = 1.0  # sigma (GPA_STD)
    templates: list[str] = field(default_factory=lambda: ["imagenet60"])  # frozen text target T0

    RULES: ClassVar[dict[str, Rule]] = {"text_loss_weight": number(0), "image_loss_weight": number(0),
                                        "logit_loss_weight": number(0), "gpa_mean": number(),
                                        "gpa_std": number(above=0), "templates": TEMPLATE_LIST}


@register_method
class PromptSRC(IVLP):
    name = "promptsrc"
    Config = PromptSRCConfig
    not_exported = ("gpa.",)

    def __init__(self, cfg: PromptSRCConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self.gpa = GaussianPromptAggregation(dict(self.named_parameters()), cfg.gpa_mean, cfg.gpa_std)

    def frozen_text_features(self, classes: ClassSet) -> Tensor:
        """(C, D) T0: normalised mean of the raw frozen features over the configured templates."""
        templates = resolve_templates(self.cfg.templates, classes.template)
        return self.backbone.zero_shot_text_features(classes.names, templates, normalize_each=False)

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        out = super().forward(images, classes, text_features)
        if self.training and torch.is_grad_enabled():  # the frozen image features I0 the losses need
            with torch.no_grad():
                out.extras["frozen_image_features"] = F.normalize(self.backbone.encode_image(images).float(), dim=-1)
        return out

    def extra_losses(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        if "frozen_image_features" not in out.extras or out.classes is None:
            raise ValueError("PromptSRC's losses need the output of a training-mode forward (method.train()).")
        text_frozen = self.frozen_text_features(out.classes)  # (C, D)
        image_frozen = out.extras["frozen_image_features"]  # (B, D)
        zero_shot_logits = self.logits(image_frozen, text_frozen)  # (B, C)
        log_p, log_p0 = F.log_softmax(out.logits, dim=-1), F.log_softmax(zero_shot_logits, dim=-1)  # (B, C)
        kl = F.kl_div(log_p, log_p0, reduction="sum", log_target=True) / out.logits.numel()
        return {
            "scl_text": self.cfg.text_loss_weight * F.l1_loss(out.text_features, text_frozen),
            "scl_image": self.cfg.image_loss_weight * F.l1_loss(out.image_features, image_frozen),
            "scl_logits": self.cfg.logit_loss_weight * kl,
        }

    def on_train_epoch_end(self, epoch: int, max_epochs: int) -> None:
        """Gaussian prompt aggregation; ``epoch`` is 0-based as in Lightning."""
        self.gpa.accumulate(dict(self.named_parameters()), epoch + 1, max_epochs)
