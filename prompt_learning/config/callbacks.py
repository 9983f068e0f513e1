"""Hydra callbacks: aggregate a paper table when its multirun ends (``table=<name>`` presets)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from prompt_learning.errors import PromptLearningError
from prompt_learning.results import aggregate, load_results, print_summary, write_outputs

log = logging.getLogger(__name__)


class AggregateAfterMultirun(Callback):
    """Aggregate every results.json under ``results_dir`` into ``<results_dir>/aggregate`` and print
    the table, once all jobs of the multirun have finished."""

    def __init__(self, results_dir: str, plots: bool = True) -> None:
        self.results_dir, self.plots = Path(results_dir), plots

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        try:
            agg = aggregate(load_results(self.results_dir))
            written = write_outputs(agg, self.results_dir / "aggregate", plots=self.plots)
        except PromptLearningError as exc:  # e.g. every job failed: say so instead of a traceback
            print(f"aggregation skipped: {exc}")
            return
        print_summary(agg)
        print("wrote " + ", ".join(map(str, written)))
