"""Class subsets with relabelling (Dassl's ``subsample_classes``; docs/protocols.md, base2new)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prompt_learning.data.types import Datum


def base_new_labels(n_classes: int) -> tuple[list[int], list[int]]:
    """Base = the first ceil(n/2) labels, new = the rest (deterministic, not per seed)."""
    m = math.ceil(n_classes / 2)
    return list(range(m)), list(range(m, n_classes))


def subsample_classes(items: Sequence[Datum], labels: Sequence[int]) -> list[Datum]:
    """Keep items whose label is in ``labels`` and relabel them 0..len(labels)-1 in that order."""
    relabel = {old: new for new, old in enumerate(labels)}
    return [Datum(d.ref, relabel[d.label], d.classname) for d in items if d.label in relabel]
