"""Train and test one configuration; every option is a Hydra override (``-m`` or ``sweep=`` for sweeps).

    uv run scripts/train.py method=coop dataset=synthetic protocol=base2new method.n_ctx=4 shots=4 seed=2
    uv run scripts/train.py backbone=vit_b16 dataset=folder dataset.root=/path/to/class_folders
    uv run scripts/train.py -m seed=1,2,3 method=coop,maple      # a grid; finished points are skipped on relaunch
    uv run scripts/train.py sweep=optuna_coop                     # Optuna on validation accuracy
"""

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from prompt_learning.config import check_overrides, exit_on_user_error, register_configs
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import run_point

register_configs()


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> dict | float:
    status = run_point(cfg)
    if cfg.get("objective"):  # an optimising sweeper (Optuna) needs a number: NaN marks a failed trial
        value = status.get("record", {}).get(cfg.objective)
        print(f"{status['status']}: {cfg.objective}={value} ({status['run_dir']})")
        return float("nan") if value is None else float(value)
    if status["status"] == "failed":
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # recorded in failed.json; the sweep goes on
            print(f"FAILED {status['run_dir']}: {status['error']}")
        else:
            with exit_on_user_error():
                raise status["exception"]
    elif os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        pass  # DDP: rank 0 reports
    elif status["status"] == "skipped":
        print(f"skipped (already done): {status['run_dir']}")
    else:
        print_results([status["record"]])
    return {k: v for k, v in status.items() if k != "exception"}


if __name__ == "__main__":
    with exit_on_user_error():
        check_overrides(sys.argv[1:])
    main()
