"""Views over open_clip's text and vision towers that let prompts enter between blocks.

open_clip keeps the text tower in two layouts: ``CLIP`` unpacks it onto the model
(``model.token_embedding``, ``model.transformer``, ``model.ln_final``...), ``CustomTextCLIP`` keeps a
``TextTransformer`` at ``model.text``. :class:`TextTower` hides the difference. Both views drive
open_clip's own modules (embeddings, residual blocks, final norms, pooling, projections); nothing of
the transformer is re-implemented here. The only loop is :func:`run_blocks`, which calls each of
open_clip's residual blocks in turn and overwrites a slot of prompt tokens before the blocks that
receive deep prompts.

Deep-prompt convention (methods.md §0.1 fact 9): "depth J" counts the input layer. ``deep[0]`` is the
input layer's prompt (handled by the caller: CoOp-style context for text, appended tokens for
vision); ``deep[i]`` for ``i >= 1`` replaces the slot's tokens right before block ``i``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from open_clip.transformer import text_global_pool
from torch import Tensor, nn

DeepPrompts = Mapping[int, Tensor]
"""Layer index -> prompt tokens, ``(n, W)`` shared by the batch or ``(N, n, W)`` per sequence."""


def _expand_prompts(prompts: Tensor, batch: int) -> Tensor:
    """(n, W) or (N, n, W) -> (N, n, W)."""
    return prompts.unsqueeze(0).expand(batch, -1, -1) if prompts.dim() == 2 else prompts


def run_blocks(
    x: Tensor, blocks: nn.ModuleList, attn_mask: Tensor | None, deep: DeepPrompts | None, slot: slice
) -> Tensor:
    """Run open_clip's residual blocks on ``x`` (N, L, W), replacing ``x[:, slot]`` by ``deep[i]``
    before block ``i`` (``i >= 1``). Sequence length never changes, so masks and pool indices stay valid.
    """
    for i, block in enumerate(blocks):
        if deep is not None and i > 0 and i in deep:
            prompts = _expand_prompts(deep[i].to(x.dtype), x.shape[0])  # (N, n, W)
            x = torch.cat([x[:, : slot.start], prompts, x[:, slot.stop :]], dim=1)  # (N, L, W)
        x = block(x, attn_mask=attn_mask)
    return x


def _project(x: Tensor, projection: Tensor | nn.Module | None) -> Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Module):
        return projection(x)
    return x @ projection


class TextTower:
    """The text half of an open_clip model, seen from token embeddings instead of token ids."""

    def __init__(self, model: nn.Module) -> None:
        text = getattr(model, "text", None)
        owner = text if isinstance(text, nn.Module) else model
        self.token_embedding: nn.Embedding = owner.token_embedding
        self.positional_embedding: Tensor = owner.positional_embedding
        self.transformer: nn.Module = owner.transformer
        self.ln_final: nn.Module = owner.ln_final
        self.projection = owner.text_projection
        self._owner = owner
        self.pool_type: str = getattr(owner, "pool_type", None) or getattr(model, "text_pool_type", "argmax")
        self.eos_id: int | None = getattr(owner, "eos_id", getattr(model, "text_eos_id", None))
        self.has_cls_token = getattr(owner, "cls_emb", None) is not None
        self.pad_masked = bool(getattr(owner, "use_pad_mask", False))

    @property
    def attn_mask(self) -> Tensor | None:
        return self._owner.attn_mask  # causal (L, L) buffer, or None for bidirectional towers

    @property
    def width(self) -> int:
        return self.token_embedding.embedding_dim

    @property
    def depth(self) -> int:
        return len(self.transformer.resblocks)

    @property
    def context_length(self) -> int:
        return self.positional_embedding.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.get_cast_dtype()

    def pool_positions(self, eot_positions: Tensor, length: int) -> Tensor:
        """Where the pooled feature is read, following the tower's own pool type."""
        if self.pool_type in ("argmax", "eos"):
            return eot_positions
        if self.pool_type == "last":
            return torch.full_like(eot_positions, length - 1)
        if self.pool_type == "first":
            return torch.zeros_like(eot_positions)
        raise ValueError(f"text pool type {self.pool_type!r} has no single pooled token")

    @property
    def truncatable(self) -> bool:
        """Whether tokens after the pooled EOT can be dropped without changing the result: a causal mask
        means no earlier token attends to them, and argmax / eos pooling reads the EOT position."""
        return self.attn_mask is not None and self.pool_type in ("argmax", "eos")

    def encode(self, token_embeds: Tensor, eot_positions: Tensor, deep: DeepPrompts | None = None,
               truncate: bool = True) -> Tensor:
        """(N, L, W) token embeddings -> (N, D) text features, as ``encode_text`` computes them.

        With ``truncate`` (and a causal, EOT-pooled tower) the sequence is cut after the last EOT of the
        batch (performance.md Tier B): the same features within float tolerance, for ~L/length less work.
        """
        if truncate and self.truncatable:
            keep = int(eot_positions.max()) + 1
            token_embeds = token_embeds[:, :keep]  # (N, keep, W)
        n, length, _ = token_embeds.shape
        x = token_embeds.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)  # (N, L, W)
        mask = self.attn_mask
        mask = mask[:length, :length] if mask is not None else None
        n_deep = next(iter(deep.values())).shape[-2] if deep else 0
        x = run_blocks(x, self.transformer.resblocks, mask, deep, slice(1, 1 + n_deep))  # (N, L, W)
        x = self.ln_final(x)
        pooled = x[torch.arange(n, device=x.device), self.pool_positions(eot_positions, length)]  # (N, W)
        return _project(pooled, self.projection)  # (N, D)

    def encode_ids(self, token_ids: Tensor) -> Tensor:
        """Reference path: open_clip's own pooling from token ids (used by tests and templates)."""
        x = self.token_embedding(token_ids)
        x = x.to(self.dtype) + self.positional_embedding.to(self.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        pooled = text_global_pool(x, token_ids, self.pool_type, eos_token_id=self.eos_id)
        return _project(pooled, self.projection)


class VisionTower:
    """The image half of an open_clip ``VisionTransformer``, with room for prompt tokens."""

    def __init__(self, visual: nn.Module) -> None:
        self.visual = visual

    @property
    def width(self) -> int:
        return self.visual.transformer.width

    @property
    def depth(self) -> int:
        return len(self.visual.transformer.resblocks)

    def encode(self, images: Tensor, prompts: Tensor | None = None, deep: DeepPrompts | None = None) -> Tensor:
        """(B, 3, H, W) images -> (B, D) image features.

        ``prompts`` (n, W) or (B, n, W) are appended after the positional embedding and before
        ``ln_pre``; LayerNorm acts per token, so normalising them apart from ``_embeds``' tokens is
        the same computation. ``deep[i]`` overwrites those last ``n`` tokens before block ``i``; the
        prompt tokens are dropped before open_clip's own pooling.
        """
        x = self.visual._embeds(images)  # (B, 1 + P, W), ln_pre applied
        n = 0
        if prompts is not None:
            n = prompts.shape[-2]
            p = self.visual.ln_pre(_expand_prompts(prompts.to(x.dtype), x.shape[0]))  # (B, n, W)
            x = torch.cat([x, p], dim=1)  # (B, 1 + P + n, W)
        length = x.shape[1]
        x = run_blocks(x, self.visual.transformer.resblocks, None, deep, slice(length - n, length))
        x = x[:, : length - n]  # (B, 1 + P, W)
        pooled, _ = self.visual._pool(x)  # (B, W)
        return _project(pooled, self.visual.proj)  # (B, D)
