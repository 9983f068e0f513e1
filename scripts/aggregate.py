"""Aggregate every results.json under a directory: mean ± std over seeds, HM of means, tables and plots.

    uv run scripts/aggregate.py results_dir=outputs            # writes outputs/aggregate/aggregate.{md,csv} + PNGs
    uv run scripts/aggregate.py --results-dir outputs --out report --no-plots
"""

import argparse
import sys
import warnings
from pathlib import Path

from prompt_learning.results import AggregationWarning, aggregate, load_results, print_summary, write_outputs
from prompt_learning.user_errors import exit_on_user_error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", help="results_dir=PATH (or just PATH)")
    parser.add_argument("--results-dir", dest="results_dir_opt", metavar="PATH")
    parser.add_argument("--out", type=Path, help="output directory (default <results_dir>/aggregate)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    args = parser.parse_args(argv)
    positional = (args.results_dir or "").removeprefix("results_dir=")
    given = args.results_dir_opt or positional
    if not given or (positional and args.results_dir_opt) or "=" in positional:
        parser.error("give the results directory once: results_dir=PATH or --results-dir PATH")
    with exit_on_user_error(), warnings.catch_warnings():
        warnings.simplefilter("always", AggregationWarning)
        warnings.showwarning = lambda message, *_, **__: print(f"warning: {message}", file=sys.stderr)
        agg = aggregate(load_results(given))
        written = write_outputs(agg, args.out or Path(given) / "aggregate", plots=not args.no_plots)
    print_summary(agg)
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
