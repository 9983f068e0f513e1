"""The README's "Add your own method" command trains the example module from outside the package."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from safetensors.torch import load_file

from prompt_learning.config import check_overrides, compose_config
from prompt_learning.engine.run import train_and_test

ROOT = Path(__file__).parents[1]


def readme_command() -> list[str]:
    """The overrides of the README's command that trains examples/coop_learned_scale.py."""
    section = ROOT.joinpath("README.md").read_text().split("## Add your own method", 1)[1]
    line = re.search(r"^uv run scripts/train\.py (plugins=.*)$", section, re.M)
    assert line, "the README's 'Add your own method' section lost its train command"
    return shlex.split(line.group(1))


def test_readme_command_trains_the_example_method_from_outside_the_package(tmp_path, monkeypatch) -> None:
    args = readme_command()
    assert "plugins=[examples/coop_learned_scale.py]" in args and "method=coop_scale" in args
    monkeypatch.chdir(ROOT)  # the command runs from the checkout, as the README says
    check_overrides(args)  # what scripts/train.py checks before Hydra composes
    cfg = compose_config([*args, f"paths.output_dir={tmp_path}", "trainer.enable_progress_bar=false",
                          "logger=none", "protocol.eval_zero_shot=false"])
    record = train_and_test(cfg)
    assert record["method"] == "coop_scale" and record["method_config"]["n_ctx"] == 4
    assert record["metrics"]["all"]["acc"] > 100 / 64  # better than chance on 64 classes
    tensors = load_file(Path(cfg.paths.run_dir) / "export" / "prompts.safetensors")
    assert set(tensors) >= {"log_scale"} and tensors["log_scale"].shape == ()
    import math

    assert abs(float(tensors["log_scale"]) - math.log(100.0)) > 0  # learned: it moved from its start
