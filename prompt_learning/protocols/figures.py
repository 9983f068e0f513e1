"""Figures shared by the protocols' plots (docs/protocols.md, "Plots"): accuracy curves and grouped bars.

What every figure shows:

* each point or bar is a mean over seeds; its error bar is ± the population std over seeds (ddof=0, as the
  tables), drawn only where there are at least two seeds;
* an average over datasets is the mean of the per-dataset seed means (as the tables); its error bar is the
  std over the seeds common to those datasets of the per-seed average over datasets (:func:`seed_average`);
* zero-shot CLIP is a reference, not a method: a dashed horizontal line across a curve plot, its own hatched
  group of bars in a bar chart;
* the accuracy axis never goes above 100 or below 0; curves use the data range plus a margin, bars start at 0.

A protocol builds its figures (``Protocol.figures``, matplotlib ``Figure`` objects that tests can inspect) and
:func:`save_figures` writes them. Artists carry a ``gid`` (``errorbar:<label>``, ``zero-shot:<label>``) so that
tests find them. matplotlib is imported only when a figure is made (:func:`figure_classes`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prompt_learning.files import atomic_write_bytes
from prompt_learning.protocols.tables import (
    Stat,
    figure_classes,
    mean,
    png_bytes,
    population_std,
    safe_filename,
)

REFERENCE = "zero-shot CLIP"
ACCURACY = "top-1 accuracy (%)"
ERRORBAR_GID = "errorbar"  # gid of a curve's or a bar series' error bars: "errorbar:<label>"
REFERENCE_GID = "zero-shot"  # gid of a reference line: "zero-shot:<label>"
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
DODGE = 0.06  # log2 units between the points of neighbouring curves at one x (at most 0.3 in all)
REFERENCE_STYLES = ("--", ":", "-.")  # reference lines: grey, one dash style each


def seed_average(per_dataset: Sequence[Mapping[int, float]]) -> Stat | None:
    """An average over datasets (each a ``seed -> accuracy`` mapping; empty ones are left out): its mean is
    the mean of the per-dataset seed means; its std and n are over the seeds common to every dataset, of the
    per-seed mean over datasets (population std, ddof=0). None when no dataset has a value."""
    present = [d for d in per_dataset if d]
    if not present:
        return None
    common = sorted(set.intersection(*(set(d) for d in present)))
    per_seed = [mean([d[s] for d in present]) for s in common]
    return Stat(mean([mean(list(d.values())) for d in present]), population_std(per_seed) if per_seed else 0.0,
                len(common), tuple(common))


def spread(stat: Stat) -> float:
    """The half-length of a point's error bar: its std, or 0 with fewer than two seeds (no bar)."""
    return stat.std if stat.n > 1 else 0.0


def datasets_text(n: int) -> str:
    return f"{n} dataset" + ("" if n == 1 else "s")


def accuracy_limits(lows: Iterable[float], highs: Iterable[float], margin: float = 0.08) -> tuple[float, float]:
    """The data range plus ``margin`` of it on each side (at least 1 point), within [0, 100]."""
    low, high = min(lows), max(highs)
    pad = max((high - low) * margin, 1.0)
    return max(0.0, low - pad), min(100.0, high + pad)


def _errorbars(ax: Any, xs: Sequence[float], stats: Sequence[Stat], color: Any, label: str) -> None:
    """± std bars at the points with at least two seeds."""
    pts = [(x, s) for x, s in zip(xs, stats, strict=True) if s.n > 1]
    if pts:
        bars = ax.errorbar([x for x, _ in pts], [s.mean for _, s in pts], yerr=[s.std for _, s in pts], fmt="none",
                           ecolor=color, elinewidth=1, capsize=3, zorder=3)
        bars.lines[2][0].set_gid(f"{ERRORBAR_GID}:{label}")


def curve_figure(title: str, curves: Mapping[str, Sequence[tuple[int, Stat]]], references: Mapping[str, Stat],
                 xlabel: str = "shots per class (K)", xticks: Iterable[int] = ()) -> Any:
    """Accuracy against a power-of-two x (log2 axis, ticks at the values present and ``xticks``): one line
    per curve with its seed spread, neighbouring curves dodged sideways so that equal points stay visible,
    and each reference as a grey dashed horizontal line (a band for its seed spread) labelled with its value."""
    Figure, _ = figure_classes()
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    xs_all = sorted({x for pts in curves.values() for x, _ in pts} | set(xticks))
    lows: list[float] = []
    highs: list[float] = []
    n = len(curves)
    step = min(DODGE, 0.3 / (n - 1)) if n > 1 else 0.0
    for i, (label, pts) in enumerate(curves.items()):
        pts = sorted(pts, key=lambda p: p[0])
        shift = 2 ** ((i - (n - 1) / 2) * step)
        xs, stats = [x * shift for x, _ in pts], [s for _, s in pts]
        (line,) = ax.plot(xs, [s.mean for s in stats], marker=MARKERS[i % len(MARKERS)], markersize=5, label=label,
                          zorder=4)
        _errorbars(ax, xs, stats, line.get_color(), label)
        lows += [s.mean - spread(s) for s in stats]
        highs += [s.mean + spread(s) for s in stats]
    for j, (label, ref) in enumerate(references.items()):
        color = "0.3"
        ax.axhline(ref.mean, linestyle=REFERENCE_STYLES[j % len(REFERENCE_STYLES)], linewidth=1.3, color=color, zorder=2, gid=f"{REFERENCE_GID}:{label}",
                   label=f"{label}: {ref.mean:.1f}")
        if spread(ref) > 0:
            ax.axhspan(ref.mean - ref.std, ref.mean + ref.std, color=color, alpha=0.1, linewidth=0, zorder=1)
        lows.append(ref.mean - spread(ref))
        highs.append(ref.mean + spread(ref))
    ax.set_xscale("log", base=2)
    if xs_all:
        ax.set_xticks(xs_all, [str(x) for x in xs_all])
        ax.set_xlim(xs_all[0] / 2 ** 0.4, xs_all[-1] * 2 ** 0.4)
    ax.minorticks_off()
    if lows:
        ax.set_ylim(*accuracy_limits(lows, highs))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ACCURACY)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def bar_figure(title: str, groups: Sequence[tuple[str, Mapping[str, Stat | float | None]]], series: Sequence[str],
               reference: str | None = None, notes: Sequence[str] = ()) -> Any:
    """Grouped bars from 0: one group per label, one bar per series (a :class:`Stat`: mean with its ± std bar;
    a float: a value without a seed spread; None: absent), its value written above. The group labelled
    ``reference`` is hatched (a baseline, not a method). ``notes`` go under the plot."""
    Figure, _ = figure_classes()
    fig = Figure(figsize=(max(4.5, 1.25 * len(groups) * len(series) / 3 + 2.4), 3.9))
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    tops = [0.0]
    texts: list[tuple[float, float, str]] = []
    for i, name in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        present = [(j, v if isinstance(v, Stat) else Stat(float(v), 0.0, 0, ()), label == reference)
                   for j, (label, values) in enumerate(groups) if (v := values.get(name)) is not None]
        xs, stats = [j + offset for j, _, _ in present], [s for _, s, _ in present]
        bars = ax.bar(xs, [s.mean for s in stats], width * 0.92, color=f"C{i}", label=name, zorder=2)
        for bar, (_, _, is_reference) in zip(bars, present, strict=True):
            if is_reference:
                bar.set_hatch("///")
                bar.set_alpha(0.55)
        _errorbars(ax, xs, stats, "black", name)
        tops += [s.mean + spread(s) for s in stats]
        texts += [(x, s, f"{s.mean:.1f}") for x, s in zip(xs, stats, strict=True)]
    top = min(100.0, max(tops) * 1.12 + 1.0)
    for x, stat, text in texts:
        inside = stat.mean + spread(stat) + 0.06 * top > top  # no room above: inside the bar, under its error bar
        y = stat.mean - spread(stat) - 0.01 * top if inside else stat.mean + spread(stat) + 0.01 * top
        ax.text(x, y, text, ha="center", va="top" if inside else "bottom",
                fontsize=7, zorder=5, bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    # long labels (sweep points: "proda (lambda_div=0.0, optim.lr=0.02)") wrap to their group's width
    ax.set_xticks(range(len(groups)), [textwrap.fill(label, 20, break_on_hyphens=False) for label, _ in groups],
                  fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, top)
    ax.set_ylabel(ACCURACY)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    from matplotlib.patches import Patch  # plain swatches: a series' first bar may be the hatched reference

    ax.legend(handles=[Patch(facecolor=f"C{i}", label=name) for i, name in enumerate(series)], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if notes:
        fig.text(0.01, -0.02, "\n".join(notes), fontsize=7, va="top", ha="left", color="0.3")
    return fig


def save_figures(prefix: str, figures: Iterable[tuple[str, Any]], out_dir: Path) -> list[Path]:
    """Write each ``(name, Figure)`` as ``<prefix>_<name>.png`` in ``out_dir`` (atomically); return the paths."""
    written: list[Path] = []
    for name, fig in figures:
        _, canvas = figure_classes()
        path = Path(out_dir) / f"{prefix}_{safe_filename(name)}.png"
        atomic_write_bytes(path, png_bytes(fig, canvas))
        written.append(path)
    return written
