"""Check a dataset before training: layout, split file, every image present, class counts.

examples:
  pl-check-data dataset=dtd data.root=/path/to/DATA
  pl-check-data dataset=folder dataset.root=/path/to/class_folders shots=16
  (in a checkout: uv run scripts/check_data.py with the same arguments)

The arguments are the training command's overrides (pl-train --help lists the groups and keys).
Exit status 0 when the data is usable, 2 with the problem and its fix otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prompt_learning.cli.common import install_warning_format, new_parser


def parser() -> argparse.ArgumentParser:
    """The command's arguments (``--help`` shows them with the examples above)."""
    p = new_parser(__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for training")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-check-data`` / ``scripts/check_data.py``; exits with 0 (usable) or 2."""
    install_warning_format()
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from omegaconf import OmegaConf

    from prompt_learning.config import check_overrides, compose_config, exit_on_user_error
    from prompt_learning.data.checks import check_dataset

    with exit_on_user_error():
        check_overrides(args.overrides)
        cfg = compose_config(args.overrides)
        report = check_dataset(OmegaConf.to_container(cfg.dataset, resolve=True), shots=int(cfg.shots))
        print("\n".join(report.lines()))
        sys.exit(0 if report.ok else 2)
