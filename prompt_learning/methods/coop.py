"""CoOp: Context Optimization (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

Eq. (2): the prompt of class c is t_c = [V]_1 [V]_2 ... [V]_M [CLASS_c] (class token at the end;
``middle`` and ``front`` move it), with M learnable context vectors [V]_m of the text width W,
shared by all classes (unified) or one set per class (class-specific context, CSC).
Eq. (3): p(y=c|x) = exp(cos(g(t_c), f(x)) / tau) / sum_j exp(cos(g(t_j), f(x)) / tau), trained with
cross-entropy; only the context vectors receive gradients.

Initialisation follows the official code (``docs/methods/coop.md``): N(0, 0.02^2), or the token embeddings
of ``ctx_init`` (e.g. "a photo of a"), in which case M is the phrase's word count and CSC is off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, PromptMethod, register_method
from prompt_learning.prompts.assembly import CLASS_TOKEN_POSITIONS
from prompt_learning.prompts.class_prompts import ClassPrompts
from prompt_learning.prompts.context import ContextVectors, PhraseContext, phrase_context
from prompt_learning.validation import Rule, number


@dataclass
class CoOpConfig(MethodConfig):
    name: str = "coop"
    n_ctx: int = 16  # M; overridden by the word count of ctx_init when that is given
    ctx_init: str = ""  # e.g. "a photo of a"; empty = random N(0, init_std^2)
    class_specific: bool = False  # CSC: one context per class (cannot score unseen classes)
    class_token_position: str = "end"  # end | middle | front
    init_std: float = 0.02

    RULES: ClassVar[dict[str, Rule]] = {"init_std": number(0)}

    def __post_init__(self) -> None:
        phrase_sets_n_ctx = self.phrase_sets_n_ctx()
        if phrase_sets_n_ctx:  # official behaviour: the phrase fixes M and implies unified context
            self.n_ctx = len(self.ctx_init.replace("_", " ").split())
            self.class_specific = False
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigurationError(f"method.class_token_position={self.class_token_position!r}; "
                                     f"choose one of {CLASS_TOKEN_POSITIONS}.")
        if self.n_ctx < 1 and not phrase_sets_n_ctx:
            raise ConfigurationError(f"method.n_ctx={self.n_ctx}; it must be at least 1.")

    def phrase_sets_n_ctx(self) -> bool:
        """Whether ``ctx_init`` decides M (its word count) and unified context, as in the official CoOp code:
        whenever a phrase is given. A subclass whose phrase fills a configured M (ProGrad) returns False."""
        return bool(self.ctx_init)


@register_method
class CoOp(PromptMethod):
    """Learned context ``self.context`` (M, W) or (C, M, W) placed by ``self.class_prompts``.

    Subclasses change where the context comes from (``class_context``), how the phrase initialises
    it (``initial_context``) or add losses and hooks.
    """

    name = "coop"
    Config = CoOpConfig

    def __init__(self, cfg: CoOpConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        text = backbone.require_text(f"method {self.name!r}")
        phrase = self.initial_context(cfg, classes)
        self.supports_unseen_classes = not cfg.class_specific
        self.context = ContextVectors(cfg.n_ctx, text.width, len(classes) if cfg.class_specific else None,
                                      phrase.init, cfg.init_std)
        self.class_prompts = ClassPrompts(backbone, cfg.n_ctx, cfg.class_token_position, phrase.frozen_ids)

    def initial_context(self, cfg: CoOpConfig, classes: ClassSet) -> PhraseContext:
        """Initial values of the context: the first M tokens of ``ctx_init`` (M = its word count)."""
        return phrase_context(self.backbone, cfg.ctx_init, cfg.n_ctx, align="left")

    @property
    def n_ctx(self) -> int:
        return self.context.n_ctx

    def class_context(self, n_classes: int) -> Tensor:
        """(C, M, W) context fed to the text encoder."""
        return self.context(n_classes)

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        ctx = self.class_context(len(self.train_classes)).detach()  # (C, M, W), as the text encoder sees it
        if self.context.class_specific:
            return {f"context[{name}]": ctx[i] for i, name in enumerate(self.train_classes.names)}
        return {"context": ctx[0]}

    def prompt_embeddings(self, classes: ClassSet) -> tuple[Tensor, Tensor]:
        """(C, L, W) assembled prompt embeddings and (C,) EOT positions."""
        self.check_classes(classes)
        return self.class_prompts.embeddings(classes, self.class_context(len(classes)))

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        embeds, eot = self.prompt_embeddings(classes)
        shared = 0 if self.context.class_specific else self.class_prompts.shared_prefix(classes)
        features = self.backbone.encode_text_embeddings(embeds, eot, shared_prefix=shared)  # (C, D)
        return F.normalize(features.float(), dim=-1)  # (C, D)
