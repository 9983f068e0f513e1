"""Nearest vocabulary tokens of learned context vectors (CoOp's ``interpret_prompt.py``, extended to
cosine similarity and to every deep text layer).

Caveat printed with every report: learned vectors lie between tokens, and their
nearest neighbours are often meaningless sub-words; the "words" are a reading aid, not what the
model uses, and deep-layer prompts live in a space that token embeddings only share at layer 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

CAVEAT = ("Caveat: learned context vectors lie between vocabulary tokens. Nearest tokens are a reading aid and "
          "often meaningless sub-words; prompts of deeper layers (layer >= 1) enter after transformer blocks, where "
          "token embeddings no longer describe them. Vision prompts have no vocabulary and are not listed.")


@dataclass
class Neighbours:
    tokens: list[list[str]]  # per vector, k tokens
    scores: Tensor  # (N, k): cosine similarity or L2 distance


def decode_token(tokenizer, token_id: int) -> str:
    decode = getattr(tokenizer, "decode", None)
    try:
        return decode([token_id]).strip() if decode else str(token_id)
    except Exception:
        return str(token_id)


@torch.no_grad()
def nearest_tokens(vectors: Tensor, table: Tensor, tokenizer, k: int = 5, metric: str = "cosine") -> Neighbours:
    """(N, W) vectors, (V, W) token-embedding table -> the k nearest tokens of each vector."""
    vectors, table = vectors.float(), table.float()
    if metric == "cosine":
        scores = F.normalize(vectors, dim=-1) @ F.normalize(table, dim=-1).T  # (N, V)
        values, indices = scores.topk(k, dim=-1)
    elif metric == "l2":
        values, indices = torch.cdist(vectors, table).topk(k, dim=-1, largest=False)  # (N, k)
    else:
        raise ValueError(f"metric={metric!r}; use 'cosine' or 'l2'")
    return Neighbours([[decode_token(tokenizer, int(i)) for i in row] for row in indices.tolist()], values)


def interpret(method, k: int = 5) -> list[str]:
    """Report lines: per learned text vector, its k nearest tokens by cosine and by L2."""
    table = method.backbone.require_text("prompt interpretation").token_embedding.weight  # (V, W)
    lines = [CAVEAT]
    prompts = method.text_prompt_tensors()
    if not prompts:
        lines.append(f"method {method.name!r} learns no vectors in the token-embedding space.")
    for name, vectors in prompts.items():
        cos = nearest_tokens(vectors, table, method.backbone.tokenizer, k, "cosine")
        l2 = nearest_tokens(vectors, table, method.backbone.tokenizer, k, "l2")
        lines.append(f"{name} ({vectors.shape[0]} vectors):")
        for i in range(vectors.shape[0]):
            by_cos = ", ".join(f"{t!r} {s:.3f}" for t, s in zip(cos.tokens[i], cos.scores[i].tolist(), strict=True))
            by_l2 = ", ".join(f"{t!r} {s:.3f}" for t, s in zip(l2.tokens[i], l2.scores[i].tolist(), strict=True))
            lines.append(f"  [{i + 1}] cosine: {by_cos}")
            lines.append(f"      L2:     {by_l2}")
    return lines
