"""Check a dataset before training: layout, split file, every image present, class counts.

    uv run scripts/check_data.py dataset=dtd data.root=/path/to/DATA
    uv run scripts/check_data.py dataset=folder dataset.root=/path/to/class_folders shots=16

Exit status 0 when the data is usable, 2 with the problem and its fix otherwise.
"""

import sys

from omegaconf import OmegaConf

from prompt_learning.config import check_overrides, compose_config, exit_on_user_error
from prompt_learning.data.checks import check_dataset

if __name__ == "__main__":
    with exit_on_user_error():
        check_overrides(sys.argv[1:])
        cfg = compose_config(sys.argv[1:])
        report = check_dataset(OmegaConf.to_container(cfg.dataset, resolve=True), shots=int(cfg.shots))
        print("\n".join(report.lines()))
        sys.exit(0 if report.ok else 2)
