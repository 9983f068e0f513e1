"""Learnable context vectors (CoOp, Zhou et al. 2022, Eq. 2: t = [V]_1 ... [V]_M [CLASS]) and their
initialisation from a phrase.

Unified context is one (M, W) tensor shared by all classes; class-specific context (CSC) is
(C, M, W). Initialisation: N(0, std^2) (std 0.02 in the papers) or token embeddings of a phrase
such as "a photo of a". How a phrase becomes context differs between the official repositories
(the initialisation sections of docs/methods/coop.md, docs/methods/ivlp.md, docs/methods/prograd.md);
:func:`phrase_context` covers all of them:

* ``left`` (CoOp, CoCoOp, PRE, MaPLe, IVLP, PromptSRC): the phrase's first M tokens become the M
  context vectors; the phrase's remaining tokens stay in the prompt as *frozen* tokens (IVLP with
  M=2 and "a photo of a": learnable "a photo", frozen "of a").
* ``right`` (ProGrad): M >= the phrase's word count p; the last p context vectors take the first p
  phrase tokens, the others start at zero; phrase tokens beyond p stay frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from prompt_learning.errors import ConfigurationError


class ContextVectors(nn.Module):
    """M learnable token embeddings of width W, optionally one set per class."""

    def __init__(self, n_ctx: int, width: int, n_classes: int | None = None, init: Tensor | None = None,
                 std: float = 0.02) -> None:
        super().__init__()
        shape = (n_ctx, width) if n_classes is None else (n_classes, n_ctx, width)
        if init is not None:
            ctx = init.detach().float().clone().expand(shape).clone()
        else:
            ctx = torch.empty(shape).normal_(0.0, std)
        self.ctx = nn.Parameter(ctx)  # (M, W) or (C, M, W)

    @property
    def class_specific(self) -> bool:
        return self.ctx.dim() == 3

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    def forward(self, n_classes: int) -> Tensor:
        """(C, M, W) context for ``n_classes`` classes."""
        if self.class_specific:
            if self.ctx.shape[0] != n_classes:
                raise ValueError(f"class-specific context was learned for {self.ctx.shape[0]} classes, "
                                 f"asked for {n_classes}")
            return self.ctx
        return self.ctx.unsqueeze(0).expand(n_classes, -1, -1)


@dataclass(frozen=True)
class PhraseContext:
    """What a context-initialisation phrase contributes to a prompt."""

    init: Tensor | None  # (M, W) initial context, or None for random N(0, std^2)
    frozen_ids: Tensor  # (k,) phrase token ids kept as frozen tokens right after the context


def phrase_tokens(backbone, phrase: str) -> Tensor:
    """(P,) token ids of ``phrase`` without start/end tokens (underscores read as spaces)."""
    ids = backbone.tokenize([phrase.replace("_", " ")])[0]  # (L,)
    eot_id = backbone.eot_token_id
    end = int((ids == eot_id).int().argmax()) if eot_id is not None else int(ids.argmax())
    return ids[1:end]


def phrase_context(backbone, phrase: str, n_ctx: int, align: str = "left") -> PhraseContext:
    """Initial context of ``n_ctx`` vectors from ``phrase`` (see the module docstring for ``align``)."""
    empty = torch.zeros(0, dtype=torch.long, device=backbone.device)
    if not phrase:
        return PhraseContext(None, empty)
    ids = phrase_tokens(backbone, phrase)  # (P,)
    embeds = backbone.token_embeddings(ids[None])[0].detach().float()  # (P, W)
    if align == "left":
        if n_ctx > ids.numel():  # MaPLe/IVLP: longer context than phrase -> random init, phrase unused
            return PhraseContext(None, empty)
        return PhraseContext(embeds[:n_ctx], ids[n_ctx:])
    if align == "right":
        n_words = len(phrase.replace("_", " ").split())
        if n_ctx < n_words:
            raise ConfigurationError(f"Context init phrase {phrase!r} has {n_words} words, more than n_ctx={n_ctx}; "
                                     f"raise method.n_ctx to at least {n_words}.")
        init = torch.zeros(n_ctx, embeds.shape[-1])  # (M, W)
        init[n_ctx - n_words:] = embeds[:n_words]
        return PhraseContext(init, ids[n_words:])
    raise ValueError(f"align={align!r}; use 'left' or 'right'")
