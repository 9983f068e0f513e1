"""Human-readable result tables (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def _row(label: str, record: dict[str, Any]) -> list[str]:
    metrics = record["metrics"]
    cells = [f"{metrics[k]['acc']:.2f}" if k in metrics else "-" for k in ("base", "new", "all")]
    hm = record.get("hm")
    return [label, *cells, f"{hm:.2f}" if hm is not None else "-"]


def print_results(records: Sequence[dict[str, Any]], with_zero_shot: bool = True) -> None:
    """One row per run (and its zero-shot baseline): accuracies (%) on base / new / all and HM."""
    table = Table(title="Top-1 accuracy (%)")
    for column in ("method", "base", "new", "all", "HM"):
        table.add_column(column, justify="right" if column != "method" else "left")
    for record in records:
        if with_zero_shot and record.get("zero_shot"):
            table.add_row(*_row("zero-shot CLIP", record["zero_shot"]))
        table.add_row(*_row(record["method"], record))
    Console().print(table)
    for record in records:
        if "config" in record:
            Console().print(f"results: {record['config']['paths']['run_dir']}/results.json")
