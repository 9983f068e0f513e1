"""Few-shot subsets, sampled exactly as Dassl's ``generate_fewshot_dataset`` (docs/protocols.md, few-shot sampling).

Items are grouped by label in first-occurrence order; for each label, ``random.sample(items, K)``
when at least K exist, else all of them. Train is sampled first, then val with min(K, 4), from one
``random.Random(seed)`` stream, so a given seed picks the same images on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from prompt_learning.data.types import Datum


def group_by_label(items: Sequence[Datum]) -> dict[int, list[Datum]]:
    groups: dict[int, list[Datum]] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def sample_few_shot(items: Sequence[Datum], shots: int, rng: random.Random) -> list[Datum]:
    """K items per label (all of a label's items when it has fewer); ``shots <= 0`` keeps everything."""
    if shots <= 0:
        return list(items)
    out: list[Datum] = []
    for group in group_by_label(items).values():
        out.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return out


def few_shot_train_val(train: Sequence[Datum], val: Sequence[Datum], shots: int, seed: int
                       ) -> tuple[list[Datum], list[Datum]]:
    """Dassl's pair of calls: K-shot train, then min(K, 4)-shot val, from the same seeded stream."""
    rng = random.Random(seed)
    return sample_few_shot(train, shots, rng), sample_few_shot(val, min(shots, 4) if shots > 0 else 0, rng)
