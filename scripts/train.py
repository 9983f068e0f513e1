"""Train and test one configuration; every option is a Hydra override (``-m`` or ``sweep=`` for sweeps).

    uv run scripts/train.py method=coop dataset=synthetic protocol=base2new method.n_ctx=4 shots=4 seed=2
    uv run scripts/train.py backbone=vit_b16 dataset=folder dataset.root=/path/to/class_folders
    uv run scripts/train.py -m seed=1,2,3 method=coop,maple      # a grid; finished points are skipped on relaunch
    uv run scripts/train.py sweep=optuna_coop                     # Optuna on validation accuracy

The command itself is prompt_learning/cli/train.py (installed: ``pl-train``); ``--help`` lists the groups.
"""

from prompt_learning.cli.train import main

if __name__ == "__main__":
    main()
