"""Re-test a finished run from its export and write <run_dir>/eval.json.

    pl-eval run_dir=outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_1-1563b16a

In a checkout, ``uv run scripts/eval.py`` takes the same arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from prompt_learning.cli.common import install_warning_format
from prompt_learning.cli.hydra_app import run_app
from prompt_learning.config import CONFIG_DIR, check_overrides, exit_on_user_error, register_configs
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import evaluate, finished_results


@hydra.main(config_path=str(CONFIG_DIR), config_name="eval", version_base="1.3")
def eval_run(cfg: DictConfig) -> None:
    """Re-test ``cfg.run_dir`` and print its table."""
    with exit_on_user_error():
        print_results([evaluate(cfg.run_dir)])


def check_run_dir(args: Sequence[str]) -> None:
    """Refuse a run_dir without results.json before Hydra creates it (and an eval.log inside it)."""
    for arg in args:
        if arg.startswith("run_dir="):
            finished_results(Path(arg.removeprefix("run_dir=")))


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-eval`` / ``scripts/eval.py``."""
    install_warning_format()
    args = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    with exit_on_user_error():
        check_overrides(args, config_name="eval")  # run_dirr=... gets "Did you mean run_dir?"
        check_run_dir(args)
    run_app(eval_run, args)
