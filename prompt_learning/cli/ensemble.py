"""Test finished runs as one seed ensemble: the mean of their test probabilities (or logits) per image.

examples:
  uv run scripts/ensemble.py outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_*
  uv run scripts/ensemble.py RUN_DIR RUN_DIR RUN_DIR --combine logits

The runs must share dataset, protocol and backbone (seeds, methods and hyperparameters may differ). Writes
ensemble-<hash>.json next to the runs and prints the accuracy table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from prompt_learning.cli.common import install_warning_format, new_parser
from prompt_learning.user_errors import exit_on_user_error


def main(argv: Sequence[str] | None = None) -> None:
    """``scripts/ensemble.py``."""
    install_warning_format()
    p = new_parser(__doc__)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="finished runs (with results.json)")
    p.add_argument("--combine", choices=("probs", "logits"), default="probs",
                   help="average softmax probabilities (default) or raw logits")
    args = p.parse_args(sys.argv[1:] if argv is None else list(argv))
    with exit_on_user_error():
        from prompt_learning.engine.ensemble import (  # torch and Lightning: after --help
            ensemble_path,
            evaluate_ensemble,
        )
        from prompt_learning.engine.report import print_results

        record = evaluate_ensemble(args.run_dirs, args.combine)
        print_results([{**record, "method": f"ensemble of {record['members']}"}], with_zero_shot=False)
        print(f"ensemble: {ensemble_path(args.run_dirs)}")
