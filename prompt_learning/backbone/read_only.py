"""Read-only tokens: K extra tokens per sequence that read the original tokens and that nothing reads (RPO).

Appended to a tower, such tokens (no positional embedding) attend at every block to the original tokens only: not to
each other nor to themselves, and no original token attends to them. The official code (mlvlab/RPO ``trainers/rpo.py``)
gets this from additive attention masks over the full sequence:

* text, per sequence c with its end-of-text token at e_c: the prompts overwrite slots e_c+1 .. e_c+K of the 77-token
  sequence, and the mask is causal plus -inf on every key column >= e_c+1, one (77, 77) mask per class and head;
* vision: the prompts are appended after the 1 + P image tokens (before ``ln_pre``) and the mask is -inf on the last
  K key columns for every query.

Because nothing reads the prompts, the original tokens follow exactly the unprompted forward. So this module runs the
original tokens block by block as the backbone does without prompts (no gradient: they depend on no learned tensor),
keeping each block's keys and values, and runs the K prompt tokens as **queries only** (:func:`read_only_block`):

    p <- p + ls_1(out_proj(softmax(q(ln_1(p)) k(ln_1(x))^T / sqrt(d) + m) v(ln_1(x))))
    p <- p + ls_2(mlp(ln_2(p)))

with x the block's original tokens and m the key mask: for text (N, 1, 1, L), -inf on the keys after each sequence's
EOT (the prompts of class c read keys <= e_c, as the causal mask lets slots e_c+1.. do once keys >= e_c+1 are
hidden); for vision none. That is the masked computation restricted to the prompt rows: same weights, same scaling.
The pooled CLS / EOT features come out of the unprompted pass itself, bit-identical to ``encode_image`` / the text
encoding without prompts (``tests/methods/test_rpo.py``), and no (C * heads, 77, 77) mask is built.

The official mask form is here too (:func:`official_text_mask`, :func:`official_vision_mask`, :func:`masked_text`,
:func:`masked_image`): the full sequences through open_clip's own residual blocks with those masks. The tests check
both paths against an independent loop, and ``scripts/benchmark_rpo.py`` times the official form.

Read-out (both forms): text t_{k,c} = ``ln_final``(h at e_c + k) @ text projection; vision
v_k = ``ln_post``(h at 1 + P + k) @ ``proj`` (open_clip's own modules), k = 1..K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone.lean_blocks import _attend_then_mlp, attention_block, plain_self_attention
from prompt_learning.backbone.towers import TextTower, VisionTower, _project
from prompt_learning.errors import ConfigurationError


def read_only_problem(text: TextTower | None, vision: VisionTower | None) -> str | None:
    """Why read-only prompt tokens cannot enter this model's towers (None if they can)."""
    if text is None or vision is None:
        return "it lacks an open_clip text transformer or a ViT image tower (both towers take prompts)"
    if not text.truncatable:
        return ("its text tower is not causal with an EOT-pooled feature, so tokens after the EOT would be read "
                "by the original tokens")
    blocks = [*text.transformer.resblocks, *vision.visual.transformer.resblocks]
    if not all(plain_self_attention(b) for b in blocks):
        return "its blocks are not open_clip's standard pre-norm nn.MultiheadAttention blocks"
    if getattr(vision.visual, "attn_pool", None) is not None:
        return "its image tower pools with an attention pooler, so prompt tokens have no per-token read-out"
    return None


@dataclass(frozen=True)
class OriginalStates:
    """What the prompts read from one unprompted pass: per block, the original tokens' keys and values."""

    keys: tuple[Tensor, ...]  # per block (N, heads, L, d)
    values: tuple[Tensor, ...]  # per block (N, heads, L, d)
    pooled: Tensor  # (N, D) the unprompted pass's own feature (CLS / EOT)
    key_mask: Tensor | None  # (N, 1, 1, L) additive, -inf on keys the prompts may not read; None: read all
    dtype: torch.dtype  # of the tower's residual stream, which the prompts join


def _heads(t: Tensor, heads: int) -> Tensor:
    """(N, L, W) -> (N, heads, L, W / heads)."""
    n, length, w = t.shape
    return t.view(n, length, heads, w // heads).transpose(1, 2)


def keys_values(block: nn.Module, normed: Tensor) -> tuple[Tensor, Tensor]:
    """(N, L, W) tokens after ``block.ln_1`` -> the block's keys and values (N, heads, L, d) each."""
    attn: nn.MultiheadAttention = block.attn
    w = normed.shape[-1]
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[w:]
    k, v = F.linear(normed, attn.in_proj_weight[w:], bias).chunk(2, dim=-1)  # (N, L, W) each
    return _heads(k, attn.num_heads), _heads(v, attn.num_heads)


def read_only_block(block: nn.Module, prompts: Tensor, keys: Tensor, values: Tensor,
                    key_mask: Tensor | None) -> Tensor:
    """One residual block for (N, K, W) prompt tokens whose queries attend to the original tokens' keys / values
    (N, heads, L, d) only -> (N, K, W). Same weights and operators as the block (``lean_blocks``)."""
    attn: nn.MultiheadAttention = block.attn
    w = prompts.shape[-1]
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[:w]
    q = _heads(F.linear(block.ln_1(prompts), attn.in_proj_weight[:w], bias), attn.num_heads)  # (N, heads, K, d)
    return _attend_then_mlp(block, prompts, q, keys.to(q.dtype), values.to(q.dtype), key_mask)  # (N, K, W)


def run_prompts(prompts: Tensor, blocks: nn.ModuleList, states: OriginalStates) -> Tensor:
    """(N, K, W) prompt tokens through every block, reading ``states`` -> (N, K, W)."""
    for block, k, v in zip(blocks, states.keys, states.values, strict=True):
        prompts = read_only_block(block, prompts, k, v, states.key_mask)  # (N, K, W)
    return prompts


# -- text ---------------------------------------------------------------------------------------------------------
def eot_key_mask(eot: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """(N,) EOT positions -> (N, 1, 1, L) additive mask: 0 on keys <= e_c, -inf after."""
    positions = torch.arange(length, device=eot.device)
    hidden = positions.unsqueeze(0) > eot.unsqueeze(1)  # (N, L)
    mask = torch.zeros(hidden.shape, dtype=dtype, device=eot.device).masked_fill(hidden, float("-inf"))
    return mask[:, None, None, :]  # (N, 1, 1, L)


@torch.no_grad()
def text_states(text: TextTower, token_embeds: Tensor, eot: Tensor, truncate: bool = True) -> OriginalStates:
    """(N, L, W) token embeddings + (N,) EOT positions -> the unprompted text pass (``TextTower.encode`` without
    prompts, Tier B when ``truncate``) with each block's keys / values. No gradient: nothing in it is learned."""
    if truncate:
        token_embeds = token_embeds[:, : int(eot.max()) + 1]  # (N, keep, W)
    n, length, _ = token_embeds.shape
    x = token_embeds.to(text.dtype) + text.positional_embedding[:length].to(text.dtype)  # (N, L, W)
    mask = text.attn_mask[:length, :length]
    keys, values = [], []
    for block in text.transformer.resblocks:
        k, v = keys_values(block, block.ln_1(x))
        keys.append(k)
        values.append(v)
        if text.lean_blocks:
            x = attention_block(block, x, None if text.causal else mask, text.causal)  # (N, L, W)
        else:
            x = block(x, attn_mask=mask)  # (N, L, W)
    x = text.ln_final(x)
    at = text.pool_positions(eot, length).to(x.device)  # (N,)
    pooled = _project(x[torch.arange(n, device=x.device), at], text.projection)  # (N, D)
    mask = eot_key_mask(eot.to(x.device), length, x.dtype)
    return OriginalStates(tuple(keys), tuple(values), pooled, mask, text.dtype)


def read_only_text(text: TextTower, states: OriginalStates, prompts: Tensor) -> Tensor:
    """(K, W) text prompts (no positional embedding) read the original tokens of N sequences -> (N, K, D):
    t_{k,n} = ln_final(h_k) @ text projection."""
    n = states.pooled.shape[0]
    p = prompts.to(states.dtype).unsqueeze(0).expand(n, -1, -1)  # (N, K, W)
    p = run_prompts(p, text.transformer.resblocks, states)  # (N, K, W)
    return _project(text.ln_final(p), text.projection)  # (N, K, D)


# -- vision -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def image_states(vision: VisionTower, images: Tensor) -> OriginalStates:
    """(B, 3, H, W) -> the unprompted image pass (open_clip's ``_embeds``, blocks, ``_pool`` and ``proj``, as its
    ``encode_image``) with each block's keys / values. No gradient: nothing in it is learned."""
    visual = vision.visual
    x = visual._embeds(images)  # (B, 1 + P, W), ln_pre applied
    keys, values = [], []
    for block in visual.transformer.resblocks:
        k, v = keys_values(block, block.ln_1(x))
        keys.append(k)
        values.append(v)
        x = block(x)  # (B, 1 + P, W): open_clip's own block, as encode_image calls it
    dtype = x.dtype
    pooled, _ = visual._pool(x)  # (B, W)
    return OriginalStates(tuple(keys), tuple(values), _project(pooled, visual.proj), None, dtype)


def read_only_image(vision: VisionTower, states: OriginalStates, prompts: Tensor) -> Tensor:
    """(K, W) vision prompts (no positional embedding, through ``ln_pre``) read the image tokens -> (B, K, D):
    v_k = ln_post(h_k) @ proj."""
    visual = vision.visual
    b = states.pooled.shape[0]
    p = visual.ln_pre(prompts.to(states.dtype)).unsqueeze(0).expand(b, -1, -1)  # (B, K, W)
    p = run_prompts(p, visual.transformer.resblocks, states)  # (B, K, W)
    return _project(visual.ln_post(p), visual.proj)  # (B, K, D)


# -- the official mask form -----------------------------------------------------------------------------------------
def official_text_mask(eot: Tensor, length: int, heads: int) -> Tensor:
    """(N,) EOT positions -> (N * heads, L, L) additive masks: causal, plus -inf on every key column >= e_c + 1
    (sequence-major, each sequence's mask repeated per head, as ``nn.MultiheadAttention`` reads a 3-D mask)."""
    causal = torch.full((length, length), float("-inf"), device=eot.device).triu(1)  # (L, L)
    after = torch.arange(length, device=eot.device).unsqueeze(0) > eot.unsqueeze(1)  # (N, L) key columns >= e_c + 1
    masks = causal.unsqueeze(0).masked_fill(after.unsqueeze(1), float("-inf"))  # (N, L, L)
    return masks.repeat_interleave(heads, dim=0)  # (N * heads, L, L)


def official_vision_mask(n_tokens: int, n_prompts: int, device: torch.device | None = None) -> Tensor:
    """(T + K, T + K) additive mask: -inf on the last K key columns for every query."""
    mask = torch.zeros(n_tokens + n_prompts, n_tokens + n_prompts, device=device)
    mask[:, n_tokens:] = float("-inf")
    return mask


def masked_text(text: TextTower, token_embeds: Tensor, eot: Tensor, prompts: Tensor) -> tuple[Tensor, Tensor]:
    """The official text pass: (N, L, W) token embeddings (positional embeddings added here) with the (K, W) prompts
    overwriting slots e_c+1 .. e_c+K (no positional embedding), open_clip's blocks with :func:`official_text_mask`
    -> EOT features (N, D) and prompt features (N, K, D)."""
    n, length, _ = token_embeds.shape
    k = prompts.shape[0]
    if int(eot.max()) + k >= length:
        raise ConfigurationError(f"{k} prompt tokens after the EOT do not fit in {length} tokens.")
    x = token_embeds.to(text.dtype) + text.positional_embedding[:length].to(text.dtype)  # (N, L, W)
    slot = torch.arange(length, device=x.device).unsqueeze(0) - eot.to(x.device).unsqueeze(1) - 1  # (N, L)
    in_slot = (slot >= 0) & (slot < k)  # (N, L)
    x = torch.where(in_slot.unsqueeze(-1), prompts.to(x.dtype)[slot.clamp(0, k - 1)], x)  # (N, L, W)
    mask = official_text_mask(eot.to(x.device), length, text.transformer.resblocks[0].attn.num_heads)
    for block in text.transformer.resblocks:
        x = block(x, attn_mask=mask)  # (N, L, W)
    x = text.ln_final(x)
    rows = torch.arange(n, device=x.device)
    at = eot.to(x.device).unsqueeze(1) + 1 + torch.arange(k, device=x.device)  # (N, K)
    return _project(x[rows, eot.to(x.device)], text.projection), _project(x[rows.unsqueeze(1), at], text.projection)


def masked_image(vision: VisionTower, images: Tensor, prompts: Tensor) -> tuple[Tensor, Tensor]:
    """The official image pass: the (K, W) prompts appended after the image tokens (no positional embedding, through
    ``ln_pre``), open_clip's blocks with :func:`official_vision_mask` -> CLS features (B, D), prompt features
    (B, K, D)."""
    visual = vision.visual
    x = visual._embeds(images)  # (B, T, W)
    b, t, _ = x.shape
    p = visual.ln_pre(prompts.to(x.dtype)).unsqueeze(0).expand(b, -1, -1)  # (B, K, W)
    x = torch.cat([x, p], dim=1)  # (B, T + K, W)
    mask = official_vision_mask(t, prompts.shape[0], x.device).to(x.dtype)
    for block in visual.transformer.resblocks:
        x = block(x, attn_mask=mask)  # (B, T + K, W)
    pooled, _ = visual._pool(x[:, :t])  # (B, W)
    return _project(pooled, visual.proj), _project(visual.ln_post(x[:, t:]), visual.proj)
