"""Train and test one configuration; every argument is a Hydra override (``-m`` or ``sweep=`` for sweeps).

    pl-train method=coop dataset=synthetic protocol=base2new method.n_ctx=4 shots=4 seed=2
    pl-train backbone=vit_b16 dataset=folder dataset.root=/path/to/class_folders
    pl-train -m seed=1,2,3 method=coop,maple      # a grid; finished points are skipped on relaunch
    pl-train sweep=optuna_coop                     # Optuna on validation accuracy

In a checkout, ``uv run scripts/train.py`` takes the same arguments. Runs are written under
``outputs/`` of the current directory (``paths.output_dir``, or the ``PL_OUTPUT_DIR`` variable).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from prompt_learning.cli.common import install_warning_format
from prompt_learning.cli.hydra_app import run_app
from prompt_learning.config import CONFIG_DIR, check_overrides, exit_on_user_error, register_configs
from prompt_learning.config.compose import compose_config
from prompt_learning.engine.orchestrate import output_places
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import run_point
from prompt_learning.files import check_writable_directory
from prompt_learning.user_errors import storage_error


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def train(cfg: DictConfig) -> dict | float:
    """One run (one point of a multirun): its status, or the objective's value for an optimising sweeper."""
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


def check_output_dir(args: Sequence[str]) -> None:
    """Refuse an output directory that cannot be written (read-only, a file in the way) before Hydra creates
    the run directory in it, as one line naming it and ``paths.output_dir``. Nothing is created here; a
    command line that does not compose (Hydra says why) or a help flag skips the check."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    try:  # the first point of a multirun stands for all
        cfg = compose_config([a.split(",")[0] if "=" in a else a for a in args if not a.startswith("-")])
        places = output_places({"paths": {"output_dir": OmegaConf.select(cfg, "paths.output_dir"),
                                          "run_dir": OmegaConf.select(cfg, "paths.run_dir")}})
    except Exception:
        return
    for place in places:
        try:
            check_writable_directory(place.path)
        except OSError as exc:
            raise storage_error(exc, places) from None


def main(argv: Sequence[str] | None = None) -> None:
    """``pl-train`` / ``scripts/train.py``: check the overrides (close matches for a misspelt key), then
    hand them to Hydra."""
    install_warning_format()
    args = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    with exit_on_user_error():
        check_overrides(args)
        check_output_dir(args)
    run_app(train, args)
