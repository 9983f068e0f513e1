"""The commands (prompt_learning/cli/, scripts/*.py, the console scripts of pyproject.toml): every one answers
``--help`` with exit status 0, a misspelt top-level key gets close matches, warnings print as one line, an
unreadable image is reported once, and the train command runs from a directory outside the checkout with its
outputs under that directory. In-process (one subprocess test is marked slow)."""

from __future__ import annotations

import importlib
import logging
import os
import runpy
import subprocess
import sys
import sysconfig
import tomllib
import warnings
from pathlib import Path

import pytest
import torch

from prompt_learning import FrozenCLIP, PromptedCLIP, create_method, save_export
from prompt_learning.cli import COMMANDS
from prompt_learning.cli.common import install_warning_format, show_warning, warning_line
from prompt_learning.config import CONFIG_DIR, check_overrides, location
from prompt_learning.errors import ConfigurationError

from .conftest import CLASSES

ROOT = Path(__file__).parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
FAST = ["backbone=tiny_test", "trainer.max_epochs=1", "shots=2", "logger=none", "dataset.test_per_class=2",
        "dataset.val_per_class=1", "protocol.eval_zero_shot=false", "trainer.enable_progress_bar=false"]


@pytest.fixture(autouse=True)
def keep_warning_hooks():
    """The commands install the one-line warning format for their process: put Python's back afterwards."""
    hooks = warnings.showwarning, warnings.formatwarning
    yield
    warnings.showwarning, warnings.formatwarning = hooks


def run_script(path: Path, *args: str) -> int:
    """``python scripts/<name>.py args`` in this process; the exit status."""
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        return 0 if exc.code is None else exc.code
    finally:
        sys.argv = saved
    return 0


def test_console_scripts_are_the_cli_mains_and_the_wheel_carries_the_configs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"] == COMMANDS
    for target in COMMANDS.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function))
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["only-include"]) == {"prompt_learning", "configs"}
    assert wheel["sources"] == {"configs": "prompt_learning/configs"}  # configs/ installs as prompt_learning/configs
    assert (ROOT / "configs" / "train.yaml").is_file() and (ROOT / "configs" / "eval.yaml").is_file()
    assert location.PACKAGED_CONFIGS.relative_to(ROOT) == Path("prompt_learning/configs")


def test_config_dir_is_the_packaged_one_when_installed(tmp_path: Path, monkeypatch) -> None:
    from prompt_learning.config.schema import METHOD_CONFIGS

    assert CONFIG_DIR == location.config_dir() == ROOT / "configs"  # a checkout: configs/ at the top
    assert METHOD_CONFIGS == CONFIG_DIR / "method"
    packaged = tmp_path / "prompt_learning" / "configs"
    packaged.mkdir(parents=True)
    monkeypatch.setattr(location, "PACKAGED_CONFIGS", packaged)
    assert location.config_dir() == packaged


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_answers_help(script: Path, capsys, keep_logging) -> None:
    assert run_script(script, "--help") == 0
    out = capsys.readouterr().out
    if script.stem not in ("train", "eval"):
        assert "usage:" in out
        return
    # Hydra's own help, without the internal schema/* groups: every group of configs/ with its options
    assert "every argument is a Hydra override" in out and "schema/" not in out and "== Config ==" in out
    groups = {p.parent.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")} - {"."}
    listed = {line.split(": ")[0] for line in out.split("== Configuration groups ==")[1].split("== Config ==")[0]
              .splitlines() if ": " in line}
    assert listed == {g for g in groups if not g.startswith(("hydra", "local"))}
    assert "method: bayes_pl, clip_adapter, cocoop, coop," in out and "experiment/coop: base2new, cross_dataset, few_shot" in out


@pytest.mark.parametrize("command", ["predict", "interpret", "aggregate", "check_data"])
def test_argparse_commands_show_usage_with_examples(command: str, capsys) -> None:
    module = importlib.import_module(f"prompt_learning.cli.{command}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "usage:" in out and f"pl-{command.replace('_', '-')} " in out


def test_key_value_arguments_and_unknown_keys(capsys) -> None:
    from prompt_learning.cli import interpret, predict
    from prompt_learning.cli.common import key_value_options

    assert key_value_options(["export=a/b", "top_k=3", "--out", "x.csv"], predict.parser()) == [
        "--export=a/b", "--top-k=3", "--out", "x.csv"]
    with pytest.raises(SystemExit) as exit_:
        interpret.main(["exprt=outputs/x"])
    assert exit_.value.code == 2 and "Did you mean 'export'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        predict.main(["export=outputs/x"])
    assert exit_.value.code == 2 and "--images" in capsys.readouterr().err


def test_a_misspelt_top_level_key_gets_close_matches(capsys) -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown config key 'shot'\. Did you mean shots\?"):
        check_overrides(["shot=4"])  # Hydra alone says "use +shot=4", which is refused too
    with pytest.raises(ConfigurationError, match=r"Unknown config key 'methd'\. Did you mean method\?"):
        check_overrides(["methd=coop", "shots=4"])
    check_overrides(["shots=4", "method=coop", "seed=1,2", "experiment=coop/base2new"])  # valid: no error
    from prompt_learning.cli import train

    with pytest.raises(SystemExit) as exit_:
        train.main(["shot=4"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "error: Unknown config key 'shot'. Did you mean shots?" in err
    from prompt_learning.cli import eval as eval_cli

    with pytest.raises(SystemExit) as exit_:
        eval_cli.main(["run_dirr=outputs/x"])
    assert exit_.value.code == 2 and "Unknown config key 'run_dirr'. Did you mean run_dir?" in capsys.readouterr().err


def test_warnings_print_as_one_line(capsys) -> None:
    assert warning_line("first line\n  second line", UserWarning) == "warning: first line second line"
    assert warning_line("old", DeprecationWarning) == "DeprecationWarning: old"
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        from prompt_learning.cli import predict

        with pytest.raises(SystemExit):
            predict.main(["--help"])  # every command installs the one-line format first
        assert warnings.showwarning is show_warning
        capsys.readouterr()
        warnings.warn("something odd\nin two lines", UserWarning, stacklevel=1)
        warnings.warn("soon gone", FutureWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: something odd in two lines\nFutureWarning: soon gone\n"
    install_warning_format()  # idempotent
    assert warnings.showwarning is show_warning


def test_predict_reports_an_unreadable_image_once(tiny_backbone: FrozenCLIP, tmp_path: Path, monkeypatch,
                                                  capsys, caplog) -> None:
    from PIL import Image

    torch.manual_seed(0)
    export = save_export(tmp_path / "export", create_method({"name": "coop", "ctx_init": "a photo of a"},
                                                            tiny_backbone, CLASSES))
    load = PromptedCLIP.from_pretrained.__func__
    monkeypatch.setattr(PromptedCLIP, "from_pretrained", classmethod(
        lambda cls, path, backbone=None, device=None, **kw: load(cls, path, tiny_backbone, device)))
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (40, 30), (60, 20, 200)).save(folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    from prompt_learning.cli import predict

    out = tmp_path / "preds.csv"
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        predict.main([f"export={export}", f"images={folder}", "classnames=red star,blue ring", f"out={out}"])
    captured = capsys.readouterr()
    lines = [*captured.out.splitlines(), *captured.err.splitlines(), *(r.getMessage() for r in caplog.records)]
    assert [line for line in lines if "broken.jpg" in line] == [
        f"warning: skipped unreadable image {folder / 'broken.jpg'}: cannot identify image file"]
    assert "1 images classified" in captured.out and len(out.read_text().splitlines()) == 2


def test_train_runs_outside_the_checkout_with_outputs_under_the_current_directory(tmp_path: Path, monkeypatch,
                                                                                 capsys, keep_logging) -> None:
    from prompt_learning.cli import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PL_OUTPUT_DIR", raising=False)
    train.main(["protocol=few_shot", *FAST])
    results = list((tmp_path / "outputs").rglob("results.json"))
    assert len(results) == 1 and results[0].parent.relative_to(tmp_path).parts[:3] == ("outputs", "few_shot",
                                                                                        "synthetic")
    assert "few_shot" in capsys.readouterr().out


@pytest.mark.slow
def test_console_script_runs_from_another_directory(tmp_path: Path) -> None:
    """The installed ``pl-train`` (uv sync puts it into the environment) answers --help outside the checkout."""
    script = Path(sysconfig.get_path("scripts")) / "pl-train"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "method: cocoop" in proc.stdout and "schema/" not in proc.stdout
    assert not list(tmp_path.iterdir())  # --help writes nothing
