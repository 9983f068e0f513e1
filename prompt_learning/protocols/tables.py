"""Aggregation types and helpers shared by ``prompt_learning.results`` (generic) and each protocol's own
tables, summaries and plots (``prompt_learning.protocols.*``); see docs/protocols.md.

* every accuracy is a top-1 percentage; one :class:`Group` is one (protocol, dataset, method, backbone,
  shots) cell, and each of its metrics a :class:`Stat`: mean, population std and n over seeds;
* the std is the population std (ddof=0, ``np.std``), as CoOp's ``parse_test_res.py``.

This module knows no protocol and imports nothing of ``prompt_learning.results``, so both sides import it
without a cycle. Library code: no Lightning, no Hydra; matplotlib is imported only inside :func:`figure_classes`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prompt_learning.errors import ConfigurationError

# the papers' table order (CoOp / CoCoOp / MaPLe); other datasets follow alphabetically
DATASET_ORDER = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch",
                 "imagenet_a", "imagenet_r")


# ---------------------------------------------------------------------------------------------- statistics

def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def population_std(values: Sequence[float]) -> float:
    """``np.std`` (ddof=0), as CoOp's ``parse_test_res.py``."""
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / len(values))


@dataclass(frozen=True)
class Stat:
    """One metric of one group over its seeds."""

    mean: float
    std: float
    n: int
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, by_seed: dict[int, float]) -> Stat:
        seeds = tuple(sorted(by_seed))
        values = [by_seed[s] for s in seeds]
        return cls(mean(values), population_std(values), len(values), seeds)

    def cell(self, flag: bool = False) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" + (" †" if flag else "")


@dataclass
class Group:
    """One (protocol, dataset, method, backbone, shots) cell over its seeds. ``hm``, ``source`` and
    ``targets`` are filled by the protocols that define them (``Protocol.fill_group``)."""

    protocol: str
    dataset: str
    method: str
    backbone: str
    shots: int
    metrics: dict[str, Stat]  # eval name -> stat, in the records' order
    hm: float | None = None  # base-to-new: HM of the seed-averaged base and new (not the mean of per-seed HMs)
    source: str | None = None  # transfer protocols: the training dataset
    targets: tuple[str, ...] = ()  # transfer protocols: the target datasets evaluated

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return self.protocol, self.dataset, self.method, self.backbone, self.shots

    @property
    def family(self) -> tuple[str, str, str, int]:
        """Groups that should share one seed set: same protocol, method, backbone and shots."""
        return self.protocol, self.method, self.backbone, self.shots

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(sorted({s for stat in self.metrics.values() for s in stat.seeds}))


def dataset_sort_key(name: str) -> tuple[int, str]:
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def check_coverage(kind: str, covered: dict[tuple, tuple[str, ...]], found: list[str]) -> None:
    """Averages over different dataset sets are not comparable: say so (one message in ``found``)."""
    sets = set(covered.values())
    if len(sets) > 1:
        detail = "; ".join(f"{' '.join(map(str, k))}: {len(v)} ({', '.join(v)})" for k, v in covered.items())
        found.append(f"{kind} averages cover different datasets, so they are not directly comparable: {detail}.")


# ---------------------------------------------------------------------------------------------- Markdown

def seeds_text(seeds: Iterable[int]) -> str:
    return "[" + ", ".join(map(str, seeds)) + "]"


def row_seeds(groups: Iterable[Group]) -> str:
    """The seed set shared by ``groups`` or ``mixed †``."""
    sets = {g.seeds for g in groups}
    return seeds_text(next(iter(sets))) if len(sets) == 1 else "mixed †"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table (first column left-aligned, the others right-aligned) and a blank line."""
    right = ["---"] + ["--:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |",
            *("| " + " | ".join(row) + " |" for row in rows), ""]


# ---------------------------------------------------------------------------------------------- plots

def safe_filename(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def figure_classes() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``: the Agg backend without touching pyplot's global backend."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigurationError("Plots need matplotlib, which is not installed: run `uv sync --extra plots` "
                                 "(or pass --no-plots / plots=False).") from exc
    return Figure, FigureCanvasAgg


def png_bytes(fig: Any, canvas_cls: Any) -> bytes:
    canvas_cls(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()
