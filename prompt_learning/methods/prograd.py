"""ProGrad: Prompt-aligned Gradient (Zhu et al., ICCV 2023; ``docs/methods/prograd.md``).

CoOp's context, updated only along directions that do not conflict with the zero-shot knowledge:
* L_ce = CE(z, y) on the prompted logits z; L_kl = T^2 * mean_b sum_c -softmax(z0/T)_c log softmax(z/T)_c,
  with z0 = s * f(x) w0^T the zero-shot logits of the *same* frozen backbone (hand-crafted templates);
* per parameter tensor, with g_d = grad L_ce and g_g = grad L_kl (Eq. 4-5):
  g = g_d - lambda * (g_d . g_g / ||g_g||^2) g_g   if g_d . g_g < 0,   else g = g_d.
The KL gradient itself is never applied. The projection depends on g_g's direction only, so it holds
unchanged for gradients scaled by a mixed-precision loss scaler.

Initialisation (``ctx_init="template"``): the words of the dataset template before "{}" fill the
last p of the M context vectors, the others start at zero. Defaults: M=16, lambda=1, T=1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.methods.base import TEMPLATE_LIST, TEMPLATE_TABLE, MethodOutput, register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.prompts.context import PhraseContext, phrase_context
from prompt_learning.prompts.templates import PROGRAD_TEMPLATES, dataset_template, resolve_templates
from prompt_learning.validation import Rule, number

log = logging.getLogger(__name__)


@dataclass
class ProGradConfig(CoOpConfig):
    name: str = "prograd"
    n_ctx: int = 16
    ctx_init: str = "template"  # "template": the dataset template's words before "{}"; "" random; or a phrase
    lambda_: float = 1.0  # projection strength (LOSS.LAMBDA; 0.8 for 8/16-shot Flowers, DTD, EuroSAT)
    temperature: float = 1.0  # T (LOSS.T)
    templates: list[str] = field(default_factory=lambda: ["dataset"])  # zero-shot teacher prompts
    # "dataset" / "template" resolve through ProGrad's own table first (class name moved to the end)
    template_overrides: dict[str, str] = field(default_factory=lambda: dict(PROGRAD_TEMPLATES))

    RULES: ClassVar[dict[str, Rule]] = {"lambda_": number(0, 1), "temperature": number(above=0),
                                        "templates": TEMPLATE_LIST, "template_overrides": TEMPLATE_TABLE}

    def phrase_sets_n_ctx(self) -> bool:
        """Never: M is the configured ``n_ctx`` and the phrase (or template words) fills its last tokens."""
        return False


def template_phrase(template: str) -> str:
    """The words of a template before its ``{}`` ("a photo of a {}." -> "a photo of a")."""
    return template.split("{}")[0].strip()


@register_method
class ProGrad(CoOp):
    name = "prograd"
    Config = ProGradConfig

    def __init__(self, cfg: ProGradConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        self._general: list[Tensor | None] = []
        self._kl: Tensor | None = None

    def initial_context(self, cfg: ProGradConfig, classes: ClassSet) -> PhraseContext:
        template = dataset_template(classes, cfg.template_overrides)
        phrase = template_phrase(template) if cfg.ctx_init == "template" else cfg.ctx_init
        if cfg.ctx_init == "template" and not phrase:
            log.warning("ProGrad: template %r has no words before '{}'; the context starts random.", template)
        return phrase_context(self.backbone, phrase, cfg.n_ctx, align="right")

    def teacher_logits(self, out: MethodOutput) -> Tensor:
        """(B, C) zero-shot logits of the frozen backbone on the same images."""
        classes = out.classes or self.train_classes
        templates = resolve_templates(self.cfg.templates, dataset_template(classes, self.cfg.template_overrides))
        return self.logits(out.image_features, self.backbone.zero_shot_text_features(classes.names, templates))

    def kl_loss(self, out: MethodOutput) -> Tensor:
        t = self.cfg.temperature
        target = F.softmax(self.teacher_logits(out) / t, dim=-1)  # (B, C)
        return -(target * F.log_softmax(out.logits / t, dim=-1)).sum(-1).mean() * t * t

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """Cross-entropy to minimise; the KL gradient g_g is taken here and used in ``after_backward``."""
        kl = self.kl_loss(out)
        params = [p for p in self.parameters() if p.requires_grad]
        if torch.is_grad_enabled() and kl.requires_grad:
            self._general = list(torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True))
        self._kl = kl.detach()
        return {"ce": F.cross_entropy(out.logits, labels)}

    def logged_metrics(self) -> dict[str, Tensor]:
        return {} if self._kl is None else {"kl": self._kl}

    @torch.no_grad()
    def after_backward(self) -> None:
        params = [p for p in self.parameters() if p.requires_grad]
        for p, general in zip(params, self._general, strict=False):
            if p.grad is None or general is None:
                continue
            dot = (p.grad * general).sum()  # () g_d . g_g
            # conflicting with the zero-shot direction (dot < 0): remove (lambda times) that component. Computed
            # on the device for both branches (coefficient 0 otherwise): no host sync per step.
            coef = torch.where(dot < 0, self.cfg.lambda_ * dot / general.pow(2).sum().clamp_min(1e-30), 0.0)  # ()
            p.grad.sub_(general * coef)
        self._general = []
