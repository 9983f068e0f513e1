"""Views over open_clip's text and vision towers that let prompts enter between blocks.

open_clip keeps the text tower in two layouts: ``CLIP`` unpacks it onto the model
(``model.token_embedding``, ``model.transformer``, ``model.ln_final``...), ``CustomTextCLIP`` keeps a
``TextTransformer`` at ``model.text``. :class:`TextTower` hides the difference.

What runs through open_clip's modules and what this code computes (overview: ``docs/architecture.md``):

* open_clip's own modules and methods, called as they are: the vision tower's ``_embeds`` (patches, class
  token, positions, ``ln_pre``) and ``_pool`` (``ln_post``, pooling), ``ln_pre`` on vision prompts, the
  text tower's ``ln_final``, and each residual block's ``forward`` when the lean blocks are off
  (``FrozenCLIP.lean_blocks = False``) or a tower has a block they do not cover.
* Ours: the addition of the text positional embedding, the loops over the blocks (:func:`run_blocks`,
  Tier C's :func:`prefix_pass` / :func:`suffix_pass`), which overwrite a slot of prompt tokens before the
  blocks that receive deep prompts, reading the pooled token at the tower's pool position, and the final
  projection (``x @ proj``, or the projection module).
* Ours, from a block's own submodules (``lean_blocks.py``, on by default): the block's attention call.
  :func:`attention_block` runs ``ln_1``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2`` and ``attn.out_proj`` as
  they are, but computes the in-projection, the heads and one fused ``scaled_dot_product_attention``
  itself instead of calling ``nn.MultiheadAttention``; Tier C's :func:`suffix_block` likewise.

Equality with open_clip is tested in ``tests/test_backbone.py``: a lean block's output and input gradient
against the block's own forward (``test_attention_block_equals_open_clips_block_from_fewer_operators``),
the towers against ``encode_text`` / ``encode_image`` (``test_text_from_embeddings_equals_encode_text``,
``test_image_loop_equals_encode_image``), lean blocks on and off (``test_lean_blocks_switch_both_towers``),
Tiers B and C against the full context (``test_truncated_and_shared_prefix_text_equal_the_full_context``).

Deep-prompt convention: "depth J" counts the input layer, as the official MaPLe / IVLP / PromptSRC code
does (``PROMPT_DEPTH=9``: the input prompt and 8 deep ones). ``deep[0]`` is the input layer's prompt
(handled by the caller: CoOp-style context for text, appended tokens for vision); ``deep[i]`` for
``i >= 1`` replaces the slot's tokens right before block ``i``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import Tensor, nn

from prompt_learning.backbone.lean_blocks import (
    attention_block,
    is_causal_mask,
    plain_self_attention,
    suffix_block,
)

R = TypeVar("R")  # what a read-only pass keeps of each block output (VisionTower.encode_with_hidden_states)
DeepPrompts = Mapping[int, Tensor]
"""Layer index -> prompt tokens, ``(n, W)`` shared by the batch or ``(N, n, W)`` per sequence."""


def _expand_prompts(prompts: Tensor, batch: int) -> Tensor:
    """(n, W) or (N, n, W) -> (N, n, W)."""
    return prompts.unsqueeze(0).expand(batch, -1, -1) if prompts.dim() == 2 else prompts


def run_blocks(
    x: Tensor, blocks: nn.ModuleList, attn_mask: Tensor | None, deep: DeepPrompts | None, slot: slice,
    lean: bool = False, causal: bool = False,
) -> Tensor:
    """Run open_clip's residual blocks on ``x`` (N, L, W), replacing ``x[:, slot]`` by ``deep[i]``
    before block ``i`` (``i >= 1``). Sequence length never changes, so masks and pool indices stay valid.
    ``lean`` (only for blocks that pass :func:`plain_self_attention`) calls them through
    :func:`attention_block`: the same numbers from fewer operators. ``causal`` declares that ``attn_mask``
    is the square causal mask (:func:`is_causal_mask`), which lean blocks then apply as ``is_causal``.
    """
    for i, block in enumerate(blocks):
        if deep is not None and i > 0 and i in deep:
            prompts = _expand_prompts(deep[i].to(x.dtype), x.shape[0])  # (N, n, W)
            x = torch.cat([x[:, : slot.start], prompts, x[:, slot.stop :]], dim=1)  # (N, L, W)
        if lean:
            x = attention_block(block, x, None if causal else attn_mask, causal)  # (N, L, W)
        else:
            x = block(x, attn_mask=attn_mask)  # (N, L, W)
    return x


def prefix_pass(prefix: Tensor, blocks: nn.ModuleList, deep: DeepPrompts | None, mask: Tensor,
                causal: bool = False) -> list[Tensor]:
    """Tier C's prefix: (G, P, W) shared tokens through every block -> per block, the prefix after ``ln_1``
    (G, P, W), which is what that block's suffix attention reads. Deep prompts (n, W) replace tokens
    1..n before the blocks that receive them; the last block's own output is never read, so not computed.
    ``causal``: ``mask`` is the square causal mask, applied as ``is_causal``."""
    normed = []
    for i, block in enumerate(blocks):
        if deep is not None and i > 0 and i in deep:
            prompts = _expand_prompts(deep[i].to(prefix.dtype), prefix.shape[0])  # (G, n, W)
            prefix = torch.cat([prefix[:, :1], prompts, prefix[:, 1 + prompts.shape[1] :]], dim=1)  # (G, P, W)
        normed.append(block.ln_1(prefix))  # (G, P, W)
        if i + 1 < len(blocks):
            prefix = attention_block(block, prefix, None if causal else mask, causal)  # (G, P, W)
    return normed


def suffix_pass(suffix: Tensor, blocks: nn.ModuleList, prefix_normed: list[Tensor], rows: Tensor,
                rows_per_group: int, mask: Tensor) -> Tensor:
    """Tier C's suffixes: (n, S, W) suffix tokens of one length bucket through every block
    (:func:`suffix_block`), attending to their group's prefix -> (n, S, W)."""
    mask = mask.to(suffix.dtype)  # (S, P + S), cast once rather than in every block
    for block, normed in zip(blocks, prefix_normed):
        suffix = suffix_block(block, suffix, normed, rows, rows_per_group, mask)  # (n, S, W)
    return suffix


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile`` modes accepted by :meth:`TextTower.compile_passes` / :meth:`VisionTower.compile_passes`."""


def compiled(fn: Callable, mode: str, backend: str | Callable) -> Callable:
    """``fn`` under ``torch.compile``. The mode applies to the inductor backend only (the others take none).
    Text and image loops compiled from the same function share Dynamo's cache, each guarded by its shapes."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown torch.compile mode {mode!r}; use one of {list(COMPILE_MODES)}")
    return torch.compile(fn, backend=backend, mode=mode if backend == "inductor" else None)


CALL_OVERHEAD_TOKENS = {"cpu": 64, "cuda": 8192}
"""What one more pass of a token batch through the tower costs besides its tokens (kernel launches, Python),
in tokens' worth of work: small on a CPU, large on a GPU, where a few thousand tokens take as long as the
launches. Sizes the length buckets and decides between Tier B and Tier C (``TextTower.encode``)."""


def length_buckets(lengths: Tensor, overhead: int = 0) -> list[tuple[Tensor, int]]:
    """Split rows of (N,) sequence lengths into buckets of contiguous length ranges, each to be padded to
    its longest member, minimising padded tokens + ``overhead`` per bucket (exact dynamic programme over
    the sorted distinct lengths). Returns ``(rows, length)`` pairs, rows as CPU index tensors."""
    lengths = lengths.cpu()
    distinct, counts = torch.unique(lengths, return_counts=True)  # sorted ascending
    values, sizes = distinct.tolist(), counts.tolist()
    k = len(values)
    best = [0.0] + [float("inf")] * k  # best[j]: cost of bucketing the j shortest distinct lengths
    cut = [0] * (k + 1)
    for j in range(1, k + 1):
        rows = 0
        for i in range(j, 0, -1):  # last bucket holds distinct lengths i-1 .. j-1, padded to values[j-1]
            rows += sizes[i - 1]
            cost = best[i - 1] + rows * values[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i - 1
    buckets, j = [], k
    while j > 0:
        i = cut[j]
        members = (lengths >= values[i]) & (lengths <= values[j - 1])
        buckets.append((members.nonzero().flatten(), values[j - 1]))
        j = i
    return buckets[::-1]


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
        self._run_blocks, self._prefix_pass, self._suffix_pass = run_blocks, prefix_pass, suffix_pass
        self.lean_blocks = True  # standard blocks run through attention_block (FrozenCLIP.lean_blocks)
        self._plain_blocks = all(plain_self_attention(b) for b in self.transformer.resblocks)
        self.causal = is_causal_mask(self.attn_mask)  # lean blocks attend with is_causal instead of the mask

    def compile_passes(self, mode: str = "default", backend: str | Callable = "inductor") -> None:
        """Run the loops over the blocks (:func:`run_blocks`, Tier C's :func:`prefix_pass` and
        :func:`suffix_pass`) under ``torch.compile``: same computation, fused kernels and (mode
        ``reduce-overhead``, CUDA) CUDA graphs. Compilation happens at the first call of each shape."""
        self._run_blocks = compiled(run_blocks, mode, backend)
        self._prefix_pass = compiled(prefix_pass, mode, backend)
        self._suffix_pass = compiled(suffix_pass, mode, backend)

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

    @property
    def prefix_shareable(self) -> bool:
        """Whether Tier C applies to this tower: truncatable, and every block is open_clip's standard one."""
        return self.truncatable and self._plain_blocks

    def encode(self, token_embeds: Tensor, eot_positions: Tensor, deep: DeepPrompts | None = None,
               truncate: bool = True, shared_prefix: int = 0, groups: int = 1) -> Tensor:
        """(N, L, W) token embeddings -> (N, D) text features, as ``encode_text`` computes them.

        With ``truncate`` (and a causal, EOT-pooled tower) the sequence is cut after the last EOT of the
        batch (Tier B, ``docs/performance.md``): the same features within float tolerance, for ~L/length less work.

        ``shared_prefix`` = P > 1 declares that the first P tokens are the same in every row of each of
        ``groups`` consecutive blocks of rows (CoOp's start token + context: one group; CoCoOp: one group
        per image). With truncation on, they are then encoded once per group and only the rows' own
        suffixes run through the tower (Tier C, :func:`suffix_block`), when the tower allows it and the
        deep-prompt slot lies inside the prefix; otherwise the call silently stays at Tier B.
        """
        n_deep = next(iter(deep.values())).shape[-2] if deep else 0
        if truncate and self.truncatable:
            keep = int(eot_positions.max()) + 1  # no device sync when the positions live on the CPU
            token_embeds = token_embeds[:, :keep]  # (N, keep, W)
            p = min(shared_prefix, int(eot_positions.min()))  # the pooled token must be a suffix token
            if (p >= 2 and p >= 1 + n_deep and token_embeds.shape[0] % groups == 0 and self.prefix_shareable
                    and all(t.dim() == 2 for t in (deep or {}).values())):
                overhead = CALL_OVERHEAD_TOKENS.get(token_embeds.device.type, CALL_OVERHEAD_TOKENS["cpu"])
                pooled_at = self.pool_positions(eot_positions.cpu(), keep)  # (N,) host copy: plans the buckets
                buckets = length_buckets(pooled_at - p + 1, overhead)
                tier_c = groups * p + sum(len(rows) * n for rows, n in buckets) + overhead * (1 + len(buckets))
                if tier_c < token_embeds.shape[0] * keep + overhead:  # fewer token-equivalents than Tier B
                    return self._encode_shared_prefix(token_embeds, pooled_at, deep, p, groups, buckets)
        n, length, _ = token_embeds.shape
        x = token_embeds.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)  # (N, L, W)
        mask = self.attn_mask
        mask = mask[:length, :length] if mask is not None else None
        lean = self.lean_blocks and self._plain_blocks
        x = self._run_blocks(x, self.transformer.resblocks, mask, deep, slice(1, 1 + n_deep), lean,
                             self.causal)  # (N, L, W)
        x = self.ln_final(x)
        at = self.pool_positions(eot_positions, length).to(x.device, non_blocking=True)  # (N,)
        pooled = x[torch.arange(n, device=x.device), at]  # (N, W)
        return _project(pooled, self.projection)  # (N, D)

    def _encode_shared_prefix(self, token_embeds: Tensor, pooled_at: Tensor, deep: DeepPrompts | None,
                              p: int, groups: int, buckets: list[tuple[Tensor, int]]) -> Tensor:
        """Tier C: (N, L, W) with rows sharing their first ``p`` tokens within each group -> (N, D).

        The prefix runs once per group, block by block, keeping what each block's suffix attention reads
        (its ``ln_1`` output). The suffixes then run in buckets of similar length (:func:`length_buckets`),
        each bucket cut at its own longest suffix, so short class names do not pay for long ones.
        """
        n, length, _ = token_embeds.shape
        x = token_embeds.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)  # (N, L, W)
        prefix = x[:: n // groups, :p]  # (G, P, W): each group's first row carries the shared tokens
        mask = self.attn_mask[:length, :length]
        blocks = self.transformer.resblocks
        prefix_normed = self._prefix_pass(prefix, blocks, deep, mask[:p, :p], self.causal)  # per block: (G, P, W)
        device = x.device
        outputs, order = [], []
        for rows, suffix_length in buckets:
            rows_dev = rows.to(device, non_blocking=True)
            suffix = x[rows_dev, p : p + suffix_length]  # (n_b, S_b, W)
            suffix_mask = mask[p : p + suffix_length, : p + suffix_length]  # (S_b, P + S_b)
            suffix = self._suffix_pass(suffix, blocks, prefix_normed, rows_dev, n // groups,
                                       suffix_mask)  # (n_b, S_b, W)
            read = (pooled_at[rows] - p).to(device, non_blocking=True)  # (n_b,)
            outputs.append(self.ln_final(suffix[torch.arange(len(rows), device=device), read]))  # (n_b, W)
            order.append(rows)
        pooled = torch.cat(outputs)[torch.argsort(torch.cat(order)).to(device)]  # (N, W) in input row order
        return _project(pooled, self.projection)  # (N, D)


class VisionTower:
    """The image half of an open_clip ``VisionTransformer``, with room for prompt tokens."""

    def __init__(self, visual: nn.Module) -> None:
        self.visual = visual
        self._run_blocks = run_blocks
        self.lean_blocks = True  # standard blocks run through attention_block (FrozenCLIP.lean_blocks)
        self._plain_blocks = all(plain_self_attention(b) for b in visual.transformer.resblocks)

    def compile_passes(self, mode: str = "default", backend: str | Callable = "inductor") -> None:
        """Run :func:`run_blocks` under ``torch.compile`` (see :meth:`TextTower.compile_passes`)."""
        self._run_blocks = compiled(run_blocks, mode, backend)

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
        x = self._run_blocks(x, self.visual.transformer.resblocks, None, deep, slice(length - n, length),
                             self.lean_blocks and self._plain_blocks)  # (B, L, W)
        x = x[:, : length - n]  # (B, 1 + P, W)
        pooled, _ = self.visual._pool(x)  # (B, W)
        return _project(pooled, self.visual.proj)  # (B, D)

    def encode_with_hidden_states(self, images: Tensor, read: Callable[[Tensor], R] | None = None
                                  ) -> tuple[Tensor, list[R]]:
        """(B, 3, H, W) images -> the (B, D) image feature and what each block's output says, from the same pass.

        Read-only: nothing is inserted, so the feature is :meth:`encode` without prompts. Block ``l``'s output
        (B, L, W) (the residual stream after block ``l``, before ``ln_post``) is handed to ``read`` as it is
        produced and the results are returned in block order; without ``read`` the outputs themselves are
        returned (12 x (B, 197, 768) for ViT-B/16). A ``read`` that reduces them (GOPro's token statistics)
        keeps only the reductions alive, not every block's tokens.
        """
        x = self.visual._embeds(images)  # (B, 1 + P, W), ln_pre applied
        lean = self.lean_blocks and self._plain_blocks
        states = []
        for block in self.visual.transformer.resblocks:
            x = attention_block(block, x, None) if lean else block(x, attn_mask=None)  # (B, L, W)
            states.append(x if read is None else read(x))
        pooled, _ = self.visual._pool(x)  # (B, W)
        return _project(pooled, self.visual.proj), states  # (B, D), depth x read(B, L, W)
