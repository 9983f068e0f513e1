"""Train and test one configuration; every option is a Hydra override.

    uv run scripts/train.py method=coop dataset=synthetic protocol=base2new method.n_ctx=4 shots=4 seed=2
    uv run scripts/train.py backbone=vit_b16 dataset=folder dataset.root=/path/to/class_folders
"""

import sys

import hydra
from omegaconf import DictConfig

from prompt_learning.config import check_overrides, exit_on_user_error, register_configs
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import train_and_test

register_configs()


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():
        print_results([train_and_test(cfg)])


if __name__ == "__main__":
    with exit_on_user_error():
        check_overrides(sys.argv[1:])
    main()
