"""Sweeps: a grid survives a failing point, a relaunch skips what is done, the same command gives the
same numbers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from prompt_learning.engine.run import run_point, train_and_test

ROOT = Path(__file__).parents[1]


GRID = ["-m", "optim.warmup_epochs=0,1", "optim.warmup_lr=1e-5,1e30", "backbone=tiny_test", "trainer.max_epochs=1",
        "shots=2", "logger=none", "trainer.enable_progress_bar=false", "dataset.test_per_class=2",
        "dataset.val_per_class=1", "protocol.eval_zero_shot=false"]


def test_grid_survives_a_failing_point_and_relaunch_skips_what_is_done(tmp_path: Path, train_cli) -> None:
    # a warm-up epoch at lr 1e30 diverges: exactly one of the four points fails
    first = train_cli(*GRID, f"paths.output_dir={tmp_path / 'out'}")
    assert first[0] == 1, first[1][-2000:] + first[2][-2000:]
    assert "sweep: 3 done, 0 skipped, 1 failed" in first[1]
    runs = tmp_path / "out" / "base2new" / "synthetic" / "coop" / "tiny_test" / "shots_2"
    results = sorted(runs.rglob("results.json"))
    failed = sorted(runs.rglob("failed.json"))
    assert len(results) == 3 and len(failed) == 1  # every point has its own directory
    assert all(re.fullmatch(r"seed_1-[0-9a-f]{8}", p.parent.name) for p in [*results, *failed])
    composed = yaml.safe_load((failed[0].parent / ".hydra" / "config.yaml").read_text())  # each point keeps its config
    assert composed["optim"]["warmup_epochs"] == 1 and composed["optim"]["warmup_lr"] == 1e30
    assert "FloatingPointError" in json.loads(failed[0].read_text())["error"]
    stamps = {p: p.stat().st_mtime_ns for p in results}
    # relaunch: the three finished points are skipped, only the failed one runs again
    second = train_cli(*GRID, f"paths.output_dir={tmp_path / 'out'}")
    assert second[0] == 1
    assert "sweep: 0 done, 3 skipped, 1 failed" in second[1]
    assert {p: p.stat().st_mtime_ns for p in results} == stamps  # nothing re-ran
    assert failed[0].stat().st_mtime_ns > stamps[results[0]]


def test_failure_is_written_and_success_clears_it(run_cfg) -> None:
    bad = run_cfg("method.n_ctx=40")
    status = run_point(bad)
    assert status["status"] == "failed" and "context length" in status["error"]
    failed = Path(bad.paths.run_dir) / "failed.json"
    saved = json.loads(failed.read_text())
    assert saved["error"].startswith("ConfigurationError") and "Traceback" in saved["traceback"]
    good = run_cfg()
    assert good.paths.run_dir != bad.paths.run_dir  # another config: another directory
    Path(good.paths.run_dir).mkdir(parents=True)
    (Path(good.paths.run_dir) / "failed.json").write_text("{}")  # as an interrupted earlier attempt leaves it
    assert run_point(good)["status"] == "done" and not (Path(good.paths.run_dir) / "failed.json").exists()
    assert failed.is_file()  # the failing config's record stays with it
    assert run_point(good)["status"] == "skipped"
    assert run_point(run_cfg("skip_done=false"))["status"] == "done"


def test_same_command_twice_gives_the_same_numbers(run_cfg, tmp_path: Path) -> None:
    first = train_and_test(run_cfg(f"paths.output_dir={tmp_path / 'a'}"))
    second = train_and_test(run_cfg(f"paths.output_dir={tmp_path / 'b'}"))
    assert first["metrics"] == second["metrics"] and first["fingerprint"] == second["fingerprint"]
    a = load_file(Path(first["config"]["paths"]["run_dir"]) / "export" / "prompts.safetensors")
    b = load_file(Path(second["config"]["paths"]["run_dir"]) / "export" / "prompts.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["dataset_info"] == second["dataset_info"] and first["git_commit"] == second["git_commit"]


def test_wandb_sweep_spec_drives_train_py_offline(tmp_path: Path) -> None:
    """The spec's parameters are valid overrides, and one point, with the arguments a W&B agent builds
    from it, trains and logs offline (grouped and tagged)."""
    import itertools

    import pytest
    import yaml

    pytest.importorskip("wandb")
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    from prompt_learning.config import check_overrides, compose_config

    spec = yaml.safe_load((ROOT / "scripts" / "sweeps" / "wandb_coop.yaml").read_text())
    assert spec["program"] == "scripts/train.py" and spec["metric"] == {"name": "val/acc", "goal": "maximize"}
    fixed = [c for c in spec["command"] if "=" in c and not c.startswith("${")]
    grid = list(itertools.product(*[p["values"] for p in spec["parameters"].values()]))
    assert len(grid) == 9
    for values in grid:
        args = create_sweep_command_args({"args": {k: {"value": v} for k, v in zip(spec["parameters"], values,
                                                                                   strict=True)}})
        check_overrides([*fixed, *args["args_no_hyphens"]])  # every key exists, every value has the right type
    agent_args = create_sweep_command_args({"args": {"method.n_ctx": {"value": 4}, "optim.lr": {"value": 0.002}}})
    cfg = compose_config([*fixed, *agent_args["args_no_hyphens"], "logger=wandb_offline", "backbone=tiny_test",
                          "trainer.max_epochs=1", "shots=2", "trainer.enable_progress_bar=false",
                          "dataset.test_per_class=2", "dataset.val_per_class=1", f"paths.output_dir={tmp_path}"])
    assert (cfg.method.n_ctx, cfg.optim.lr, cfg.protocol.name) == (4, 0.002, "few_shot")
    record = run_point(cfg)["record"]
    log = next((Path(cfg.paths.run_dir) / "wandb").glob("offline-run-*/*.wandb")).read_bytes()
    assert b"few_shot/synthetic/coop" in log and b"shots_2" in log  # the group and a tag
    assert 0 <= record["metrics"]["all"]["acc"] <= 100


def test_optuna_study_writes_best_preset_and_resumes(tmp_path: Path, train_cli) -> None:
    import pytest

    optuna = pytest.importorskip("optuna")
    command = ["sweep=optuna_coop", "backbone=tiny_test",
               "shots=2", "logger=none", "trainer.enable_progress_bar=false",
               "dataset.test_per_class=2", "dataset.val_per_class=1", "protocol.eval_zero_shot=false",
               f"paths.output_dir={tmp_path / 'out'}"]
    for n_trials, total in ((3, 3), (1, 4)):  # the second launch continues the stored study
        code, out, err = train_cli(*command, f"hydra.sweeper.n_trials={n_trials}")
        assert code == 0, out[-2000:] + err[-2000:]
        assert "\x1b[" not in out + err and "alembic" not in out + err  # no noise
        study = optuna.load_study(study_name="coop_synthetic_base2new",
                                  storage=f"sqlite:///{tmp_path / 'out' / 'optuna' / 'studies.db'}")
        assert len(study.trials) == total
    values = [t.value for t in study.trials]
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results.json")]
    assert len(records) >= 2 and set(values) <= {r["val_acc"] for r in records}  # the objective: validation accuracy
    # (the seeded sampler proposes the same first points again; those trials reuse the finished runs)
    preset = (tmp_path / "out" / "optuna" / "best_coop_synthetic_base2new.yaml").read_text()
    assert preset.startswith("# @package _global_") and "lr:" in preset and "n_ctx:" in preset


def test_submitit_local_runs_a_point(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "hydra/launcher=submitit_local", "seed=1",
         "backbone=tiny_test", "trainer.max_epochs=1", "shots=2", "logger=none", "trainer.enable_progress_bar=false",
         "dataset.test_per_class=2", "dataset.val_per_class=1", "protocol.eval_zero_shot=false",
         f"paths.output_dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(list((tmp_path / "out" / "base2new").rglob("results.json"))) == 1
    assert "sweep: 1 done, 0 skipped, 0 failed" in proc.stdout


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path: Path, run_cfg) -> None:
    settings = ["backbone=tiny_test", "trainer.max_epochs=2", "shots=4", "data.batch_size=8", "logger=none",
                "trainer.enable_progress_bar=false", "dataset.test_per_class=3", "dataset.val_per_class=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "trainer=ddp", *settings,
                           f"paths.output_dir={tmp_path / 'ddp'}"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (ddp_dir,) = (tmp_path / "ddp" / "base2new" / "synthetic" / "coop" / "tiny_test" / "shots_4").glob("seed_1-*")
    ddp = json.loads((ddp_dir / "results.json").read_text())
    assert ddp["world_size"] == 2 and proc.stdout.count("Top-1 accuracy") == 1  # rank 0 reports and writes
    single = train_and_test(run_cfg(*settings, f"paths.output_dir={tmp_path / 'one'}"))
    assert single["world_size"] == 1
    # each test image counted once: the same number of images, and accuracy on the same grid of 1/n
    assert ddp["classes"] == single["classes"]
    for name in ("base", "new"):
        assert abs(ddp["metrics"][name]["acc"] - single["metrics"][name]["acc"]) <= 100 / 96 + 1e-6
    a = load_file(ddp_dir / "export" / "prompts.safetensors")["context.ctx"]
    b = load_file(Path(single["config"]["paths"]["run_dir"]) / "export" / "prompts.safetensors")["context.ctx"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # the same global batches, gradients all-reduced


def test_a_diverging_run_fails_with_the_fix(run_cfg) -> None:
    status = run_point(run_cfg("optim.warmup_lr=1e30", "trainer.max_epochs=2"))
    assert status["status"] == "failed"
    assert "FloatingPointError" in status["error"] and "optim.lr" in status["error"]
