"""The offline demo: CoOp vs zero-shot CLIP, base-to-new, on the embedded synthetic default.

Trains CoOp on the 32 base classes of the synthetic dataset with the packaged tiny CLIP, then tests
CoOp and zero-shot CLIP on base and new classes and prints base / new / HM. Extra arguments are
Hydra overrides, e.g. `uv run scripts/demo.py seed=2 method.n_ctx=8`.
"""

import argparse

from prompt_learning.cli.common import install_warning_format
from prompt_learning.config import check_overrides, compose_config, exit_on_user_error
from prompt_learning.engine.report import print_results
from prompt_learning.engine.run import train_and_test

if __name__ == "__main__":
    install_warning_format()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides on top of experiment=demo")
    overrides = ["experiment=demo", *parser.parse_args().overrides]
    with exit_on_user_error():
        check_overrides(overrides)
        print_results([train_and_test(compose_config(overrides))])
