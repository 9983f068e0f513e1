"""Class prompts with context slots: the frozen pieces of ``[SOT] ctx_1..ctx_M [frozen phrase] name . [EOT]``
cached per class set, and their assembly with (possibly per-image) context.

Every text-prompting method (CoOp, CoCoOp, KgCoOp, ProGrad, PRE, IVLP, MaPLe, PromptSRC) builds its
input sequence here; what differs between them is only where the context tensor comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from prompt_learning.classes import ClassSet
from prompt_learning.prompts.assembly import assemble, check_fits, context_layout, tokenize_classes


@dataclass(frozen=True)
class ClassTokens:
    """Frozen pieces of one class set's prompts."""

    prefix: Tensor  # (C, 1, W) start-token embeddings
    suffix: Tensor  # (C, L-1-M, W) frozen phrase, name, '.', EOT, padding embeddings
    layout: Tensor  # (C, L) gather index into [prefix | ctx | suffix]
    eot: Tensor  # (C,) EOT position in the assembled prompt, on the CPU (read on the host without a sync)
    shared_prefix: int  # leading positions identical in every class's prompt when the context is shared


def _shared_prefix(ids: Tensor, layout: Tensor, n_ctx: int) -> int:
    """Number of leading prompt positions that hold the same token (or the same context slot) in every
    class: start token + context (+ frozen phrase) for ``end``, the start token (+ half the context) otherwise."""
    slots = torch.full((ids.shape[0], n_ctx), -1, dtype=ids.dtype, device=ids.device)  # context marker
    source = torch.cat([ids[:, :1], slots, ids[:, 1 : ids.shape[1] - n_ctx]], dim=1)  # (C, L)
    arranged = torch.gather(source, 1, layout)  # (C, L) token id (or -1 for context) at each position
    same = (arranged == arranged[:1]).all(dim=0)  # (L,)
    return int(same.long().cumprod(0).sum())


class ClassPrompts:
    """Builds ``(C, L, W)`` prompt embeddings for any class set from ``(M, W)``-shaped context.

    Args:
        backbone: the frozen CLIP (tokenizer and token embeddings).
        n_ctx: number of context slots M right after the start token.
        position: where the class name sits relative to the context: ``end`` | ``middle`` | ``front``.
        frozen_ids: phrase tokens kept frozen between the context and the class name (``end`` only).
    """

    def __init__(self, backbone, n_ctx: int, position: str = "end", frozen_ids: Tensor | None = None) -> None:
        self.backbone, self.n_ctx, self.position = backbone, n_ctx, position
        self.frozen_ids = frozen_ids if frozen_ids is not None and frozen_ids.numel() else None
        if self.frozen_ids is not None and position != "end":
            raise ValueError("frozen phrase tokens are only defined for class_token_position='end'")
        self._cache: dict[tuple, ClassTokens] = {}

    def tokens(self, classes: ClassSet) -> ClassTokens:
        key = (classes.names, str(self.backbone.device))
        if key not in self._cache:
            frozen = None if self.frozen_ids is None else self.frozen_ids.to(self.backbone.device)
            tokens = tokenize_classes(self.backbone.tokenize, classes.names, self.backbone.eot_token_id,
                                      self.backbone.sot_token_id, frozen_ids=frozen)
            length = tokens.ids.shape[1]
            check_fits(tokens, classes.names, self.n_ctx, length)
            with torch.no_grad():
                embeds = self.backbone.token_embeddings(tokens.ids)  # (C, L, W)
            layout = context_layout(tokens.name_lens, self.n_ctx, length, self.position)  # (C, L)
            self._cache[key] = ClassTokens(embeds[:, :1], embeds[:, 1 : length - self.n_ctx], layout,
                                           (tokens.eot + self.n_ctx).cpu(), _shared_prefix(tokens.ids, layout, self.n_ctx))
        return self._cache[key]

    def shared_prefix(self, classes: ClassSet) -> int:
        """Leading positions common to all of ``classes``' prompts when one context is shared by all."""
        return self.tokens(classes).shared_prefix

    def embeddings(self, classes: ClassSet, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """Context (C, M, W) -> assembled prompts (C, L, W) and EOT positions (C,)."""
        t = self.tokens(classes)
        return assemble(t.prefix, ctx, t.suffix, t.layout), t.eot

    def features_per_context(self, classes: ClassSet, ctx: Tensor) -> Tensor:
        """(k, M, W) contexts, one per group (an image's conditioned context, a sampled or an ensemble member's
        prompt) -> (k, C, D) normalised class features. Each group's C prompts share their start token + context:
        encoded once per group, only the class suffixes per prompt (Tier C, ``groups=k``)."""
        k, n_cls = ctx.shape[0], len(classes)
        t = self.tokens(classes)
        rows = ctx.unsqueeze(1).expand(-1, n_cls, -1, -1).reshape(k * n_cls, *ctx.shape[1:])  # (k*C, M, W)
        prompts = assemble(t.prefix.repeat(k, 1, 1), rows, t.suffix.repeat(k, 1, 1), t.layout.repeat(k, 1))  # (k*C, L, W)
        features = self.backbone.encode_text_embeddings(prompts, t.eot.repeat(k), shared_prefix=t.shared_prefix,
                                                        groups=k)  # (k*C, D)
        return F.normalize(features.float(), dim=-1).view(k, n_cls, -1)  # (k, C, D)

    def features_in_chunks(self, classes: ClassSet, ctx: Tensor, per_chunk: int, checkpointing: bool) -> Tensor:
        """(N, M, W) contexts -> (N, C, D) by :meth:`features_per_context` over chunks of ``per_chunk`` contexts.
        With ``checkpointing``, gradients on and more than one chunk, each chunk runs under activation
        checkpointing: the stored activations are one chunk's prompts, recomputed in backward (same gradients)."""
        parts = ctx.split(max(1, per_chunk))  # (k, M, W) each
        recompute = checkpointing and torch.is_grad_enabled() and len(parts) > 1
        return torch.cat([checkpoint(self.features_per_context, classes, part, use_reentrant=False)
                          if recompute and part.requires_grad else self.features_per_context(classes, part)
                          for part in parts])  # (N, C, D)
