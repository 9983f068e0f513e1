"""The README's "Add your own method" command trains the example module from outside the package."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from safetensors.torch import load_file

from prompt_learning.config import check_overrides, compose_config
from prompt_learning.engine.run import train_and_test
from prompt_learning.methods import METHODS
from prompt_learning.registry import plugin_module_name

ROOT = Path(__file__).parents[1]


def readme_command() -> list[str]:
    """The overrides of the README's command that trains examples/coop_learned_scale.py."""
    section = ROOT.joinpath("README.md").read_text().split("## Add your own method", 1)[1]
    line = re.search(r"^uv run scripts/train\.py (plugins=.*)$", section, re.M)
    assert line, "the README's 'Add your own method' section lost its train command"
    return shlex.split(line.group(1))


def unload_plugin(method: str, module: str) -> None:
    """Forget a plugin's method, so that later tests that list every method see the built-in ones only."""
    METHODS.unregister(method)
    sys.modules.pop(module, None)


def test_readme_command_trains_the_example_method_from_outside_the_package(tmp_path, monkeypatch) -> None:
    args = readme_command()
    assert "plugins=[examples/coop_learned_scale.py]" in args and "method=coop_scale" in args
    monkeypatch.chdir(ROOT)  # the command runs from the checkout, as the README says
    check_overrides(args)  # what scripts/train.py checks before Hydra composes
    fast = ["backbone=tiny_test", "shots=2", "dataset.test_per_class=1", "dataset.val_per_class=1"]  # test speed
    cfg = compose_config([*args, *fast, f"paths.output_dir={tmp_path}", "trainer.enable_progress_bar=false",
                          "logger=none", "protocol.eval_zero_shot=false"])
    try:
        record = train_and_test(cfg)
    finally:
        unload_plugin("coop_scale", plugin_module_name(ROOT / "examples" / "coop_learned_scale.py"))
    assert record["method"] == "coop_scale" and record["method_config"]["n_ctx"] == 4
    assert record["epochs_trained"] == 2 and 0 <= record["metrics"]["all"]["acc"] <= 100
    tensors = load_file(Path(cfg.paths.run_dir) / "export" / "prompts.safetensors")
    assert set(tensors) >= {"log_scale"} and tensors["log_scale"].shape == ()
    import math

    assert abs(float(tensors["log_scale"]) - math.log(100.0)) > 0  # learned: it moved from its start
