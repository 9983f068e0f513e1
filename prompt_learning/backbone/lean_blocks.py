"""The lean blocks: open_clip's standard residual block computed from the block's own modules and weights.

For a block :func:`plain_self_attention` accepts (open_clip's pre-norm ``ResidualAttentionBlock`` over a
batch-first ``nn.MultiheadAttention`` with packed in-projection), :func:`attention_block` computes

    x = x + ls_1(attn(ln_1(x)))          attn(h) = out_proj(softmax(q k^T / sqrt(d_head) + mask) v)
    x = x + ls_2(mlp(ln_2(x)))           [q, k, v] = h W_in^T + b_in, split into heads of d_head = W / heads

calling the block's own ``ln_1``, ``attn.out_proj``, ``ls_1``, ``ln_2``, ``mlp`` and ``ls_2`` modules. What
it computes itself is the attention call: the in-projection (``F.linear`` with ``attn.in_proj_weight`` /
``attn.in_proj_bias``), the head split and merge, and one fused ``F.scaled_dot_product_attention``
(:func:`_attend_then_mlp`), in place of ``nn.MultiheadAttention.forward``, whose general path checks,
reshapes and copies its inputs on every call. :func:`suffix_block` (Tier C, ``docs/performance.md``) is the
same block restricted to the suffix rows, its keys/values preceded by the shared prefix's.

The towers (``towers.py``) use them when ``FrozenCLIP.lean_blocks`` is on (the default) and every block of a
tower is plain; otherwise each block is called as open_clip's ``block(x, attn_mask=...)``. Equality with
open_clip's block is tested in ``tests/test_backbone.py``
(``test_attention_block_equals_open_clips_block_from_fewer_operators``: output and input gradient, causal
and unmasked; ``test_lean_blocks_switch_both_towers``: whole towers with lean blocks on and off).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock
from torch import Tensor, nn


def is_causal_mask(mask: Tensor | None) -> bool:
    """Whether ``mask`` is the additive (L, L) causal mask open_clip builds (0 on and below the diagonal,
    -inf above): then ``scaled_dot_product_attention(..., is_causal=True)`` computes the same attention
    without reading a mask (bit-identical on the CPU), which lets a GPU use its flash kernels and drops the
    mask's cast to the autocast dtype in every block. On the CPU the text pass takes the same time either way
    (``scripts/benchmark.py --attention``)."""
    if mask is None or mask.dim() != 2 or mask.shape[0] != mask.shape[1]:
        return False
    causal = torch.full_like(mask, float("-inf")).triu(1)  # (L, L)
    return bool(torch.equal(mask, causal))


def attention_block(block: nn.Module, x: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
    """open_clip's pre-norm residual block, x + ls_1(attn(ln_1(x))) then x + ls_2(mlp(ln_2(x))), computed
    from the block's own modules and weights with one fused ``scaled_dot_product_attention`` call.

    ``nn.MultiheadAttention``'s general path checks, reshapes and copies its inputs on every call. For a
    standard batch-first block (:func:`plain_self_attention`) this gives the same result with about 40% fewer
    operators per block, forward and backward (61 against 105). On a GPU, where a few-shot step costs host time
    per operator (``benchmarks/ops.md``), that is what bounds the step.

    Args:
        x: (N, L, W) tokens entering the block.
        mask: (L, L) additive attention mask, or None.
        causal: attend causally (``is_causal``; pass ``mask=None``), what open_clip's causal mask does.
    """
    attn: nn.MultiheadAttention = block.attn
    n, length, w = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)  # (N, L, 3W)
    q, k, v = qkv.view(n, length, 3, heads, w // heads).permute(2, 0, 3, 1, 4)  # (N, heads, L, W / heads) each
    return _attend_then_mlp(block, x, q, k, v, mask, causal)  # (N, L, W)


def _attend_then_mlp(block: nn.Module, x: Tensor, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                     causal: bool = False) -> Tensor:
    """The rest of a standard block once its queries (N, heads, S, d) and keys/values (N, heads, T, d) are
    projected: attention, ``out_proj``, LayerScale and residual, then ``ln_2``/``mlp`` -> (N, S, W)."""
    n, s, w = x.shape
    mask = None if mask is None else mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (N, heads, S, d)
    x = x + block.ls_1(block.attn.out_proj(out.transpose(1, 2).reshape(n, s, w)))  # (N, S, W)
    return x + block.ls_2(block.mlp(block.ln_2(x)))  # (N, S, W)


def plain_self_attention(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's standard pre-norm block over a batch-first ``nn.MultiheadAttention``
    (the layout :func:`suffix_block` drives; anything else falls back to the full sequence)."""
    attn = getattr(block, "attn", None)
    return (type(block) is ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
            and isinstance(attn, nn.MultiheadAttention) and attn.batch_first and attn._qkv_same_embed_dim
            and attn.bias_k is None and not attn.add_zero_attn)


def spread_to_rows(per_group: Tensor, rows: Tensor, rows_per_group: int) -> Tensor:
    """(G, P, W) per-group tensor -> (n, P, W) for the given sorted row indices (group = row // rows_per_group).

    Built from ``expand`` (its backward is a sum) and a gather of distinct rows, never an index with
    repeated entries: on the CPU the backward of such an index accumulates with atomic adds in thread order,
    which would make training runs differ in the last bits."""
    groups = per_group.shape[0]
    if groups == 1:
        return per_group.expand(rows.shape[0], -1, -1)  # (n, P, W) view
    every_row = per_group.unsqueeze(1).expand(-1, rows_per_group, -1, -1).flatten(0, 1)  # (G * R, P, W)
    return every_row[rows]  # (n, P, W)


def suffix_block(block: nn.Module, suffix: Tensor, prefix_normed: Tensor, rows: Tensor, rows_per_group: int,
                 mask: Tensor) -> Tensor:
    """One residual block for the suffix tokens of N sequences whose first P tokens are shared by groups.

    Tier C (``docs/performance.md``): under a causal mask the prefix never sees the suffix, so the prefix
    is run once per group (by the block itself) and only the suffix tokens run here. Their queries attend to the
    group's prefix keys/values (projected once, from ``prefix_normed``) followed by their own, which is the
    block's attention restricted to the suffix rows: same weights (``in_proj``, ``out_proj``), same scaling
    1/sqrt(d_head), same ``ln_1``/``ln_2``/``mlp``/LayerScale calls.

    Args:
        suffix: (N, S, W) suffix tokens entering the block; N = G * rows per group.
        prefix_normed: (G, P, W) the groups' prefix tokens after ``block.ln_1``.
        rows: (N,) the suffixes' row indices, sorted; row r continues the prefix of group r // rows_per_group.
        mask: (S, P + S) additive mask (rows of the causal mask for the suffix positions).
    """
    attn: nn.MultiheadAttention = block.attn
    n, s, w = suffix.shape
    heads = attn.num_heads
    weight, bias = attn.in_proj_weight, attn.in_proj_bias
    q, k, v = F.linear(block.ln_1(suffix), weight, bias).chunk(3, dim=-1)  # (N, S, W) each
    kv_bias = None if bias is None else bias[w:]
    k_p, v_p = F.linear(prefix_normed, weight[w:], kv_bias).chunk(2, dim=-1)  # (G, P, W) each
    k = torch.cat([spread_to_rows(k_p, rows, rows_per_group), k], dim=1)  # (N, P + S, W)
    v = torch.cat([spread_to_rows(v_p, rows, rows_per_group), v], dim=1)  # (N, P + S, W)

    def split(t: Tensor) -> Tensor:  # (N, T, W) -> (N, heads, T, W / heads)
        return t.reshape(n, t.shape[1], heads, w // heads).transpose(1, 2)

    return _attend_then_mlp(block, suffix, split(q), split(k), split(v), mask)  # (N, S, W)
