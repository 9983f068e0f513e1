"""Run and sweep directories, launched the way users launch them: every distinct config gets its own run
directory (W&B agent points, multirun points on a folder), never a path in a name, a sweep's table holds
its own points, each point keeps its composed config, Optuna studies are named by the dataset's identity."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from prompt_learning.config import CONFIG_DIR, compose_config, register_configs
from prompt_learning.engine.run import run_point

FAST = ["backbone=tiny_test", "trainer.max_epochs=1", "shots=2", "logger=none", "trainer.enable_progress_bar=false",
        "protocol.eval_zero_shot=false"]


def write_folder(root: Path, classes: int = 3, per_class: int = 6) -> Path:
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i * 40 % 255, c * 80, 0)).save(root / f"class_{c}" / f"img_{i}.jpg")
    return root


def test_two_agent_runs_with_other_hyperparameters_get_their_own_directories(tmp_path: Path) -> None:
    """A W&B agent launches one plain run per point, all with the same output root."""
    common = [*FAST, "dataset.test_per_class=2", "dataset.val_per_class=1", f"paths.output_dir={tmp_path}"]
    first = compose_config([*common, "method.n_ctx=4", "optim.lr=0.001"])
    second = compose_config([*common, "method.n_ctx=8", "optim.lr=0.002"])
    assert first.paths.run_dir != second.paths.run_dir
    assert [run_point(first)["status"], run_point(second)["status"]] == ["done", "done"]
    records = [json.loads((Path(c.paths.run_dir) / "results.json").read_text()) for c in (first, second)]
    assert [r["method_config"]["n_ctx"] for r in records] == [4, 8]
    assert Path(first.paths.run_dir).name == f"seed_1-{records[0]['fingerprint'][:8]}"  # the fingerprint names it
    again = compose_config([*common, "optim.lr=0.001", "method.n_ctx=4", "logger=csv"])  # same config, other order
    assert again.paths.run_dir == first.paths.run_dir and run_point(again)["status"] == "skipped"


def test_relative_and_absolute_folder_are_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = compose_config(["dataset=folder", "dataset.root=pets"]).paths.run_dir
    absolute = compose_config(["dataset=folder", f"dataset.root={tmp_path / 'pets'}"]).paths.run_dir
    assert relative == absolute and str(tmp_path) not in relative


def test_folder_multirun_dirs_own_configs_and_a_table_of_its_own_points(tmp_path: Path, train_cli) -> None:
    folder = write_folder(tmp_path / "my photos")  # a path with a space
    out = tmp_path / "out"
    argv = ["sweep=seeds", "hydra.sweeper.params.seed='1,2'", "dataset=folder", f"dataset.root={folder}",
            "protocol=few_shot", *FAST, f"paths.output_dir={out}"]
    code, printed, _ = train_cli(*argv)
    assert code == 0
    results = sorted(out.rglob("results.json"))
    assert len(results) == 2 and "sweep: 2 done, 0 skipped, 0 failed" in printed
    for path in (p for p in out.rglob("*") if p.is_dir()):  # no path, no override text in a directory name
        assert " " not in path.name and "=" not in path.name and "," not in path.name, path
    assert all(log.stat().st_size > 0 for log in out.rglob("*.log"))  # no empty train.log files
    for result in results:  # each point keeps its composed config next to its results
        overrides = yaml.safe_load((result.parent / ".hydra" / "overrides.yaml").read_text())
        seed = json.loads(result.read_text())["seed"]
        assert f"seed={seed}" in overrides and "dataset=folder" in overrides
    records = [json.loads(p.read_text()) for p in results]
    eval_cfg = compose_config([f"run_dir={results[0].parent}"], config_name="eval")  # scripts/eval.py takes a point
    assert eval_cfg.run_dir == str(results[0].parent)
    (sweep_id,) = {s for r in records for s in r["sweeps"]}
    assert (out / "sweeps" / sweep_id / "multirun.yaml").is_file()
    assert (out / "sweeps" / sweep_id / "aggregate" / "aggregate.md").is_file()
    assert re.search(r"\d+\.\d\d ± \d+\.\d\d", printed)  # the end-of-sweep summary: mean ± std over seeds

    # an unrelated run under the same root (another sweep's seed 3), then the same sweep relaunched
    other = results[0].parents[1] / "seed_3-00000000" / "results.json"
    other.parent.mkdir()
    shutil.copy(results[0], other)
    other.write_text(json.dumps({**records[0], "seed": 3, "sweeps": ["another"]}))
    code, printed, _ = train_cli(*argv)
    assert code == 0 and "sweep: 0 done, 2 skipped, 0 failed" in printed
    table = (out / "sweeps" / sweep_id / "aggregate" / "aggregate.csv").read_text().splitlines()
    row = dict(zip(table[0].split(","), table[1].split(",")))
    assert len(table) == 2 and [row["n"], row["seeds"]] == ["2", "1;2"]  # n and seeds: its own points only


def hydra_config(overrides: list[str]):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_optuna_studies_of_two_folders_are_two_studies(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    names = {hydra_config(["sweep=optuna_coop", "dataset=folder", f"dataset.root={tmp_path / d / 'images'}"])
             .hydra.sweeper.study_name for d in ("pets", "cars")}
    assert len(names) == 2 and all(re.fullmatch(r"coop_folder-images-[0-9a-f]{6}_base2new", n) for n in names)


def test_debug_runs_write_under_their_own_root() -> None:
    assert compose_config(["debug=fast"]).paths.run_dir.startswith("outputs/debug/")
