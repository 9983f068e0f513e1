"""The offline demo: CoOp vs zero-shot CLIP, base-to-new, on the embedded synthetic default.

Trains CoOp on the 32 base classes of the synthetic dataset with the packaged tiny CLIP, then tests
CoOp and zero-shot CLIP on base and new classes and prints base / new / HM. Extra arguments are
Hydra overrides, e.g. `uv run scripts/demo.py seed=2 method.n_ctx=8`.
"""

import sys

from prompt_learning.config import check_overrides, compose_config, exit_on_user_error
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import train_and_test

if __name__ == "__main__":
    with exit_on_user_error():
        check_overrides(["experiment=demo", *sys.argv[1:]])
        print_results([train_and_test(compose_config(["experiment=demo", *sys.argv[1:]]))])
