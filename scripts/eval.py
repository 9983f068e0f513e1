"""Re-test a finished run from its export and write <run_dir>/eval.json.

    uv run scripts/eval.py run_dir=outputs/base2new/synthetic/coop/tiny_synthetic/shots_16/seed_1
"""

import hydra
from omegaconf import DictConfig

from prompt_learning.config import exit_on_user_error, register_configs
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import evaluate

register_configs()


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        print_results([evaluate(cfg.run_dir)])


if __name__ == "__main__":
    main()
