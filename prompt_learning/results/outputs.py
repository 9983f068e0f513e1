"""The aggregate's outputs: ``aggregate.md``, ``aggregate.csv``, PNG plots and a few summary lines.

Each is assembled here and filled by the protocols present, in their table order: a protocol's Markdown
section (default: one row per group), its extra CSV rows, its plots and its summary lines.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prompt_learning.files import atomic_write_bytes
from prompt_learning.protocols.tables import figure_classes, md_table, seeds_text
from prompt_learning.results.records import protocol_of
from prompt_learning.results.runs import TRANSDUCTIVE_MARK, UNSEEN_NAMES_MARK

if TYPE_CHECKING:
    from prompt_learning.results.aggregate import Aggregate

CSV_COLUMNS = ("protocol", "dataset", "method", "backbone", "shots", "metric", "mean", "std", "n", "seeds",
               "ece_mean", "ece_std", "nll_mean", "nll_std")
"""``metric`` is an eval set (mean / std: its accuracy) or a protocol's summary (``hm``); ``ece_*`` / ``nll_*``: the
eval set's calibration over the same seeds, blank when a run of the cell did not record it."""


def to_markdown(agg: Aggregate) -> str:
    lines = ["# Results aggregate", "",
             f"{agg.n_records} runs in {len(agg.groups)} groups. Top-1 accuracy (%), mean ± population std "
             "(ddof=0, as CoOp's parse_test_res.py) over seeds. † marks a cell whose seed set differs from the "
             "most common one for its method, backbone and shots (see Warnings).", ""]
    if any(TRANSDUCTIVE_MARK in g.method for g in agg.groups):
        lines += [f"Rows marked `{TRANSDUCTIVE_MARK.strip()}` were trained on unlabeled images of the classes they are "
                  "tested on (e.g. base-to-new's new classes) and with those class names: they are not inductive "
                  "results, and are not comparable with rows trained on the training classes alone.", ""]
    if any(UNSEEN_NAMES_MARK in g.method for g in agg.groups):
        lines += [f"Rows marked `{UNSEEN_NAMES_MARK.strip()}` were trained with the names (not the images) of classes "
                  "they are tested on but not trained on (e.g. base-to-new's new classes): they are not plain "
                  "base-to-new results.", ""]
    if agg.warnings:
        lines += ["## Warnings", "", *(f"- {w}" for w in agg.warnings), ""]
    for name in agg.protocols:
        protocol = protocol_of(name)
        lines += [f"## {protocol.title} (`{name}`)", "", *protocol.markdown(agg, agg.groups_of(name))]
    lines += calibration_markdown(agg)
    return "\n".join(lines).rstrip() + "\n"


def calibration_markdown(agg: Aggregate) -> list[str]:
    """The ``## Calibration`` section: one row per group × eval set whose runs all recorded ECE or NLL."""
    rows = []
    for g in agg.groups:
        for metric, accuracy in g.metrics.items():
            ece, nll = (agg.calibration_stat(g.key, metric, n) for n in ("ece", "nll"))
            if ece is None and nll is None:
                continue
            rows.append([g.method, g.protocol, g.dataset, g.backbone, str(g.shots), metric,
                         accuracy.cell(g.key in agg.flagged), "–" if ece is None else ece.cell(),
                         "–" if nll is None else f"{nll.mean:.3f} ± {nll.std:.3f}", seeds_text(accuracy.seeds)])
    if not rows:
        return []
    return ["## Calibration", "",
            "Expected calibration error (ECE, %: 15 equal-width confidence bins, Σ |accuracy − confidence| · "
            "n_bin / N) and negative log-likelihood (NLL, nats: the mean cross-entropy) of each eval set, mean ± "
            "population std over the seeds of its accuracy; lower is better. Runs whose results.json predates "
            "these metrics have no row here.", "",
            *md_table(["method", "protocol", "dataset", "backbone", "shots", "eval set", "accuracy (%)", "ECE (%)",
                       "NLL (nats)", "seeds"], rows)]


def csv_rows(agg: Aggregate) -> list[dict[str, Any]]:
    """One row per group × metric (CSV_COLUMNS; an eval set's row carries its ECE / NLL when every run of the cell
    recorded them), then the group's protocol's own rows (base-to-new: ``hm``,
    the HM of the seed-averaged base and new, with an empty std: it is not a per-seed statistic)."""
    rows = []
    for g in agg.groups:
        common = {"protocol": g.protocol, "dataset": g.dataset, "method": g.method, "backbone": g.backbone,
                  "shots": g.shots}
        for name, s in g.metrics.items():
            rows.append({**common, "metric": name, "mean": round(s.mean, 6), "std": round(s.std, 6), "n": s.n,
                         "seeds": ";".join(map(str, s.seeds))})
            for kind in ("ece", "nll"):  # blank (DictWriter's restval) when absent
                if (stat := agg.calibration_stat(g.key, name, kind)) is not None:
                    rows[-1].update({f"{kind}_mean": round(stat.mean, 6), f"{kind}_std": round(stat.std, 6)})
        rows += [{**common, **row} for row in protocol_of(g.protocol).csv_rows(g)]
    return rows


def to_csv(agg: Aggregate) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(agg))
    return buf.getvalue()


def write_outputs(agg: Aggregate, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``aggregate.md``, ``aggregate.csv`` and (``plots=True``) every present protocol's PNG plots;
    return their paths. Plots need matplotlib (a :class:`ConfigurationError` says how to install it)."""
    out = Path(out_dir)
    written = [out / "aggregate.md", out / "aggregate.csv"]
    atomic_write_bytes(written[0], to_markdown(agg).encode())
    atomic_write_bytes(written[1], to_csv(agg).encode())
    if plots:
        figure_classes()  # asked for plots: say so when matplotlib is missing, whatever the protocols
        for name in agg.protocols:
            written += protocol_of(name).plot(agg, out)
    return written


def print_summary(agg: Aggregate, file: TextIO | None = None) -> None:
    """A few lines per protocol: the averages the papers report, plus the number of warnings."""
    file = file or sys.stdout
    print(f"{agg.n_records} runs, {len(agg.groups)} groups (top-1 %, mean over seeds)", file=file)
    for name in agg.protocols:
        for line in protocol_of(name).summary_lines(agg):
            print(line, file=file)
    for g in agg.groups:  # what each average is made of: mean ± std over the seeds of every group
        cells = "  ".join(f"{metric} {stat.cell()}" for metric, stat in g.metrics.items())
        seeds = ", ".join(map(str, next(iter(g.metrics.values())).seeds)) if g.metrics else ""
        print(f"  {g.dataset} {g.method} {g.backbone} {g.shots}-shot: {cells}  (seeds {seeds})", file=file)
    if agg.warnings:
        print(f"{len(agg.warnings)} warning(s) (also listed in aggregate.md)", file=file)
