"""Aggregate every results.json below a folder: mean ± std over seeds, HM of means, tables and plots.

examples:
  pl-aggregate results_dir=outputs              # writes outputs/aggregate/aggregate.{md,csv} + PNGs
  pl-aggregate outputs --out report --no-plots
  pl-aggregate --results-dir outputs
  (in a checkout: uv run scripts/aggregate.py with the same arguments)
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from prompt_learning.cli.common import install_warning_format, new_parser
from prompt_learning.results import AggregationWarning, aggregate, load_results, print_summary, write_outputs
from prompt_learning.user_errors import exit_on_user_error


def parser() -> argparse.ArgumentParser:
    """The command's arguments (``--help`` shows them with the examples above)."""
    p = new_parser(__doc__)
    p.add_argument("results_dir", nargs="?", help="results_dir=PATH (or just PATH)")
    p.add_argument("--results-dir", dest="results_dir_opt", metavar="PATH")
    p.add_argument("--out", type=Path, help="output directory (default <results_dir>/aggregate)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-aggregate`` / ``scripts/aggregate.py``."""
    install_warning_format()
    p = parser()
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    positional = (args.results_dir or "").removeprefix("results_dir=")
    given = args.results_dir_opt or positional
    if not given or (positional and args.results_dir_opt) or "=" in positional:
        p.error("give the results directory once: results_dir=PATH or --results-dir PATH")
    with exit_on_user_error(), warnings.catch_warnings():
        warnings.simplefilter("always", AggregationWarning)
        agg = aggregate(load_results(given))
        written = write_outputs(agg, args.out or Path(given) / "aggregate", plots=not args.no_plots)
    print_summary(agg)
    print("wrote " + ", ".join(map(str, written)))
