"""The placement of learned context among a class prompt's tokens (class sets live in ``prompt_learning.classes``).

A class prompt is tokenised once as ``[SOT] name tokens [.] [EOT] [pad...]`` (the "plain" ids). With
M context vectors the assembled sequence keeps length L:

* ``end``:    ``[SOT] ctx_1..ctx_M  name  [.] [EOT] pad``
* ``middle``: ``[SOT] ctx_1..ctx_h  name  ctx_h+1..ctx_M  [.] [EOT] pad``   (h = M // 2)
* ``front``:  ``[SOT] name  ctx_1..ctx_M  [.] [EOT] pad``

In every case the EOT token moves from position e to e + M. The layout is expressed as an index map
into the concatenation ``[prefix (1) | ctx (M) | suffix (L-1-M)]`` so that assembly is a single
``gather``, vectorised over classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from prompt_learning.classes import ClassSet, prompt_name  # noqa: F401  (ClassSet: its old import path)
from prompt_learning.errors import ConfigurationError

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


@dataclass(frozen=True)
class TokenizedClasses:
    """Plain ``"{name}."`` prompts of a class set, tokenised (cached per class set by methods)."""

    ids: Tensor  # (C, L) token ids of "[SOT] name . [EOT] pad"
    eot: Tensor  # (C,) position of EOT in ``ids``
    name_lens: Tensor  # (C,) number of tokens of each class name


def eot_positions(ids: Tensor, eot_id: int | None) -> Tensor:
    """(N, L) ids -> (N,) index of the end-of-text token (argmax when EOT has the largest id)."""
    return (ids == eot_id).int().argmax(-1) if eot_id is not None else ids.argmax(-1)


def tokenize_classes(tokenize, names: Sequence[str], eot_id: int | None, sot_id: int | None = None,
                     suffix: str = ".", frozen_ids: Tensor | None = None) -> TokenizedClasses:
    """Tokenise ``"{name}{suffix}"`` for every class and measure each name's token length.

    ``frozen_ids`` (k,) are spliced in right after the start token (the part of a context phrase that
    stays frozen, e.g. "of a"); they count as part of the name for ``name_lens``. Context is inserted
    right after a start token, so every sequence must begin with one: ``sot_id`` when the tokenizer
    declares it, else the same first id for every class."""
    names = [prompt_name(n) for n in names]
    ids = tokenize([f"{n}{suffix}" for n in names])  # (C, L)
    first = ids[:, 0]
    if (sot_id is not None and bool((first != sot_id).any())) or bool((first != first[0]).any()):
        raise ConfigurationError("Context prompts need a tokenizer that starts every sequence with a start-of-text "
                                 "token (CLIP's BPE does); this backbone's tokenizer does not. Choose a CLIP-style "
                                 "backbone or the zeroshot method.")
    name_lens = eot_positions(tokenize(list(names)), eot_id) - 1  # (C,)
    eot = eot_positions(ids, eot_id)  # (C,)
    if frozen_ids is not None and frozen_ids.numel():
        k, length = frozen_ids.numel(), ids.shape[1]
        if int(eot.max()) + k >= length:
            raise ConfigurationError(f"Class prompts with the frozen phrase tokens {frozen_ids.tolist()} exceed the "
                                     f"context length {length}; shorten the class names or the context phrase.")
        spliced = frozen_ids.to(ids).unsqueeze(0).expand(len(names), -1)  # (C, k)
        ids = torch.cat([ids[:, :1], spliced, ids[:, 1 : length - k]], dim=1)  # (C, L)
        eot, name_lens = eot + k, name_lens + k
    return TokenizedClasses(ids=ids, eot=eot, name_lens=name_lens)


def check_fits(classes: TokenizedClasses, names: Sequence[str], n_ctx: int, context_length: int) -> None:
    """Raise if a class prompt plus ``n_ctx`` context tokens no longer fits the context length."""
    too_long = (classes.eot + n_ctx >= context_length).nonzero().flatten().tolist()
    if too_long:
        bad = names[too_long[0]]
        raise ConfigurationError(f"Class name {bad!r} with {n_ctx} context tokens is longer than the text "
                                 f"tower's context length {context_length}; shorten the name or lower n_ctx.")


def context_layout(name_lens: Tensor, n_ctx: int, length: int, position: str) -> Tensor:
    """(C,) name lengths -> (C, L) indices into ``[prefix (1) | ctx (M) | suffix (L-1-M)]``."""
    if position not in CLASS_TOKEN_POSITIONS:
        raise ConfigurationError(f"class_token_position={position!r}; choose one of {CLASS_TOKEN_POSITIONS}.")
    rows = []
    for n_name in name_lens.tolist():
        ctx = list(range(1, 1 + n_ctx))
        suffix = list(range(1 + n_ctx, length))
        name, rest = suffix[:n_name], suffix[n_name:]
        if position == "end":
            order = ctx + name + rest
        elif position == "front":
            order = name + ctx + rest
        else:
            half = n_ctx // 2
            order = ctx[:half] + name + ctx[half:] + rest
        rows.append([0] + order)
    return torch.tensor(rows, dtype=torch.long, device=name_lens.device)  # (C, L)


def assemble(prefix: Tensor, ctx: Tensor, suffix: Tensor, layout: Tensor) -> Tensor:
    """Gather (C, 1, W) prefix, (C, M, W) context and (C, L-1-M, W) suffix into (C, L, W) by ``layout``."""
    source = torch.cat([prefix, ctx.to(prefix.dtype), suffix], dim=1)  # (C, L, W)
    return torch.gather(source, 1, layout.unsqueeze(-1).expand(-1, -1, source.shape[-1]))  # (C, L, W)
