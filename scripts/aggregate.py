"""Aggregate every results.json under a directory: mean ± std over seeds, HM of means, tables and plots.

    uv run scripts/aggregate.py results_dir=outputs            # writes outputs/aggregate/aggregate.{md,csv} + PNGs
    uv run scripts/aggregate.py --results-dir outputs --out report --no-plots

The command itself is prompt_learning/cli/aggregate.py (installed: ``pl-aggregate``).
"""

from prompt_learning.cli.aggregate import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
