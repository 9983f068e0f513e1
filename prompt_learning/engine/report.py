"""Human-readable result tables (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from prompt_learning.protocols import PROTOCOLS, get_protocol


def summary_columns() -> list[tuple[str, str]]:
    """Summary keys of results records and their column titles, as every registered protocol declares them
    (base-to-new's harmonic mean, the transfer protocols' mean over target datasets)."""
    columns: list[tuple[str, str]] = []
    for name in PROTOCOLS:
        columns += [c for c in get_protocol(name).summary_columns if c not in columns]
    return columns


def result_columns(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
    """The eval sets (in the order the runs report them: base, new / source, targets...) and the summary
    columns present in any of ``records`` or their zero-shot baselines."""
    rows = [r for record in records for r in (record.get("zero_shot") or {}, record)]
    sets: list[str] = []
    for row in rows:
        sets += [name for name in row.get("metrics", {}) if name not in sets]
    summaries = [(key, title) for key, title in summary_columns() if any(row.get(key) is not None for row in rows)]
    return sets, summaries


def _cells(record: dict[str, Any], sets: Sequence[str], summaries: Sequence[tuple[str, str]]) -> list[str]:
    metrics = record["metrics"]
    cells = [f"{metrics[name]['acc']:.2f}" if name in metrics else "-" for name in sets]
    return cells + [f"{record[key]:.2f}" if record.get(key) is not None else "-" for key, _ in summaries]


def _number(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _calibration_cells(record: dict[str, Any], sets: Sequence[str]) -> list[str]:
    """``ECE / NLL`` per eval set ("-" for a value the record does not hold, e.g. one from before the metrics)."""
    metrics = record["metrics"]
    return [f"{_number(metrics[n].get('ece'), 2)} / {_number(metrics[n].get('nll'), 3)}" if n in metrics else "-"
            for n in sets]


def print_results(records: Sequence[dict[str, Any]], with_zero_shot: bool = True) -> None:
    """One row per run (and its zero-shot baseline): accuracy (%) on each eval set (base / new, or the source
    and target datasets), then HM or the target mean; then, when the records hold them, the calibration of the
    same rows: ECE (%) / NLL (nats) per eval set."""
    sets, summaries = result_columns(records)
    table = Table(title="Top-1 accuracy (%)")
    calibration = Table(title="Calibration: ECE (%, 15 bins) / NLL (nats)")
    table.add_column("method")
    calibration.add_column("method")
    for column in [*sets, *(title for _, title in summaries)]:
        table.add_column(column, justify="right")
    for column in sets:
        calibration.add_column(column, justify="right")
    rows: list[tuple[str, dict[str, Any]]] = []
    for record in records:
        if with_zero_shot and record.get("zero_shot"):
            rows.append(("zero-shot CLIP", record["zero_shot"]))
        rows.append((record["method"], record))
    for name, row in rows:
        table.add_row(name, *_cells(row, sets, summaries))
        calibration.add_row(name, *_calibration_cells(row, sets))
    titles = ["zero-shot CLIP", *sets, *(title for _, title in summaries)]
    # every cell ("80.00", "3.21 / 0.845") on one line, also for ten target datasets
    wide = sum(max(len(t), 15) + 3 for t in titles) + 1
    console = Console()
    if console.width < wide:
        console = Console(width=wide)
    console.print(table)
    if any(m.get("ece") is not None for _, row in rows for m in row["metrics"].values()):
        console.print(calibration)
    for record in records:
        if "config" in record:  # one line whatever the terminal width, so that it can be copied
            console.print(f"results: {record['config']['paths']['run_dir']}/results.json", soft_wrap=True)
