"""Re-test a finished run from its export and write <run_dir>/eval.json.

    uv run scripts/eval.py run_dir=outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_1
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from prompt_learning.config import exit_on_user_error, register_configs
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import evaluate, finished_results

register_configs()


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        print_results([evaluate(cfg.run_dir)])


def check_run_dir(args: list[str]) -> None:
    """Refuse a run_dir without results.json before Hydra creates it (and an eval.log inside it)."""
    for arg in args:
        if arg.startswith("run_dir="):
            finished_results(Path(arg.removeprefix("run_dir=")))


if __name__ == "__main__":
    with exit_on_user_error():
        check_run_dir(sys.argv[1:])
    main()
