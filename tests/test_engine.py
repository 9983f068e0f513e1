"""End to end through train_and_test: results.json, export, checkpoints, resume, re-evaluation, loggers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file

from prompt_learning.engine.run import evaluate, train_and_test
from prompt_learning.errors import ConfigurationError

RESULT_KEYS = {"schema_version", "method", "method_config", "backbone", "dataset", "protocol", "shots", "seed",
               "metrics", "hm", "zero_shot", "model_selection", "wall_time_s", "config", "git_commit", "versions"}


class Interrupt(Callback):
    """Simulates a run killed at the start of an epoch (after the previous epoch's checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def test_base2new_run_writes_results_and_export(run_cfg) -> None:
    cfg = run_cfg()
    record = train_and_test(cfg)
    run_dir = Path(cfg.paths.run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert RESULT_KEYS <= set(saved)
    assert set(saved["metrics"]) == {"base", "new"} and 0 <= saved["metrics"]["new"]["acc"] <= 100
    base, new = saved["metrics"]["base"]["acc"], saved["metrics"]["new"]["acc"]
    assert saved["hm"] == pytest.approx(2 * base * new / (base + new) if base + new else 0.0)
    assert saved["backbone"]["model_name"] == "tiny_test" and saved["classes"] == {"train": 32, "base": 32, "new": 32}
    assert saved["dataset_info"] == {"render_seed": 0, "fewest_train_images_per_class": 2}
    assert set(saved["zero_shot"]["metrics"]) == {"base", "new"}
    for metrics in (saved["metrics"], saved["zero_shot"]["metrics"]):  # values: tests/test_calibration.py
        assert all(0 <= m["ece"] <= 100 and 0 <= m["nll"] < 50 for m in metrics.values())
    assert saved["model_selection"] == {"checkpoint": "last_epoch", "selection_splits": [], "selected_by": {}}
    assert saved == json.loads(json.dumps(record, default=str))
    config = json.loads((run_dir / "export" / "prompt_config.json").read_text())
    assert config["method"]["name"] == "coop" and len(config["classnames"]) == 32
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert set(checkpoint["state_dict"]) == {"method.context.ctx"}  # no frozen backbone inside
    again = evaluate(run_dir)  # rebuilt from the export on a freshly built backbone
    assert again["metrics"] == saved["metrics"]
    assert saved["fingerprint"] == checkpoint["prompt_learning"]["fingerprint"]


class StartEpoch(Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.epoch = trainer.current_epoch


def learned(record) -> dict[str, torch.Tensor]:
    return load_file(Path(record["config"]["paths"]["run_dir"]) / "export" / "prompts.safetensors")


def test_killed_run_resumes_to_the_same_numbers(run_cfg, tmp_path) -> None:
    uninterrupted = train_and_test(run_cfg("trainer.max_epochs=3", f"paths.output_dir={tmp_path}/a"))
    cfg = run_cfg("trainer.max_epochs=3", f"paths.output_dir={tmp_path}/b", "logger=csv", "trainer.log_every_n_steps=1")
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_and_test(cfg, callbacks=[Interrupt(epoch=2)])
    assert (Path(cfg.paths.run_dir) / "checkpoints" / "last.ckpt").is_file()
    assert not (Path(cfg.paths.run_dir) / "results.json").exists()
    start = StartEpoch()
    resumed = train_and_test(cfg, callbacks=[start])
    assert start.epoch == 2  # continued after the two saved epochs instead of starting over
    a, b = learned(uninterrupted), learned(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise the same prompts
    assert resumed["metrics"] == uninterrupted["metrics"]
    logs = sorted((Path(cfg.paths.run_dir) / "logs").glob("version_*/metrics.csv"))
    assert len(logs) == 2  # the killed attempt's log is kept beside the resumed one's


def test_resume_refuses_a_checkpoint_of_another_config(run_cfg, tmp_path) -> None:
    from prompt_learning.engine.run import run_point

    fixed = f"paths.run_dir={tmp_path / 'fixed'}"  # two configs share a directory only when the user names it
    train_and_test(run_cfg("method.n_ctx=4", fixed))
    with pytest.raises(ConfigurationError, match="other settings \\(method.n_ctx: 4 -> 8\\).*resume=false"):
        train_and_test(run_cfg("method.n_ctx=8", fixed))
    refused = run_point(run_cfg("method.n_ctx=8", fixed))  # as scripts/train.py runs it: refused, nothing written
    run_dir = Path(refused["run_dir"])
    assert refused["status"] == "failed" and "other settings" in refused["error"]
    assert (run_dir / "results.json").is_file() and not (run_dir / "failed.json").exists()
    record = train_and_test(run_cfg("method.n_ctx=8", "resume=false", fixed))
    assert learned(record)["context.ctx"].shape[0] == 8


def test_few_shot_protocol_and_zero_shot_method(run_cfg) -> None:
    record = train_and_test(run_cfg("protocol=few_shot", "method=zeroshot"))
    assert set(record["metrics"]) == {"all"} and "hm" not in record and record["zero_shot"] is None
    assert not (Path(record["config"]["paths"]["run_dir"]) / "checkpoints").exists()  # nothing to fit


def test_class_specific_context_is_refused_for_base2new(run_cfg) -> None:
    with pytest.raises(ConfigurationError, match="protocol=base2new.*few_shot"):
        train_and_test(run_cfg("method.class_specific=true"))


def test_wandb_offline_logger(run_cfg, monkeypatch) -> None:
    pytest.importorskip("wandb")
    cfg = run_cfg("logger=wandb_offline", "trainer.max_epochs=1")
    train_and_test(cfg)
    runs = list((Path(cfg.paths.run_dir) / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].glob("*.wandb"))


def test_cli_reports_missing_weights_in_one_message(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PL_OUTPUT_DIR": str(tmp_path)}
    script = Path(__file__).parents[1] / "scripts" / "train.py"
    proc = subprocess.run([sys.executable, str(script), "backbone=vit_b16", "dataset=folder",
                           f"dataset.root={tmp_path}"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "'ViT-B-16'" in proc.stderr and "'openai'" in proc.stderr and "backbone.pretrained=" in proc.stderr


@pytest.mark.parametrize("override,key", [("protocol.name=b2n", "protocol.name='b2n'"),
                                          ("trainer.precision=bf16", "trainer.precision='bf16'"),
                                          ("backbone.precision=fp8", "backbone.precision='fp8'"),
                                          ("method.class_token_position=centre", "class_token_position='centre'")])
def test_bad_choices_fail_before_loading_anything(run_cfg, override: str, key: str, monkeypatch) -> None:
    import prompt_learning.engine.orchestrate as run

    monkeypatch.setattr(run, "build_backbone", lambda cfg: pytest.fail("validation must come first"))
    with pytest.raises(ConfigurationError, match=key.replace("(", r"\(")):
        train_and_test(run_cfg(override))


def test_result_table_shows_each_protocols_eval_sets_and_summary(capsys) -> None:
    """Base-to-new rows show base / new / HM; cross-dataset rows the source, every target and their mean."""
    from prompt_learning.engine.report import print_results

    def record(metrics: dict[str, float], **summary: float) -> dict:
        return {"metrics": {k: {"acc": v} for k, v in metrics.items()}, **summary}

    base2new = {"method": "coop", **record({"base": 80.0, "new": 60.0}, hm=68.571),
                "zero_shot": record({"base": 70.0, "new": 74.0}, hm=71.944)}
    targets = {f"target_{i}": 40.0 + i for i in range(10)}
    cross = {"method": "maple", **record({"imagenet": 71.5, **targets}, target_mean=44.5),
             "zero_shot": record({"imagenet": 66.7, **targets}, target_mean=44.5),
             "config": {"paths": {"run_dir": "/very/long/path/" + "x" * 80}}}
    print_results([base2new])
    out = capsys.readouterr().out
    assert "HM" in out and "68.57" in out and "71.94" in out and "target mean" not in out
    print_results([cross])
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert [c for c in lines["maple"].replace("│", " ").split()] == ["maple", "71.50", *(f"{v:.2f}" for v in
                                                                     targets.values()), "44.50"]
    assert "66.70" in lines["zero-shot"] and "HM" not in out
    assert f"results: /very/long/path/{'x' * 80}/results.json" in out  # one line, not wrapped


def test_atomic_writes_get_the_umask_mode_and_leave_no_temporary_file(tmp_path) -> None:
    """Results and exports are readable by the group as with a plain open() (not mkstemp's 0600)."""
    from prompt_learning.files import atomic_write_bytes, atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "results.json", {"hm": 1.0})
        atomic_write_bytes(tmp_path / "sub" / "prompts.safetensors", b"abc")
    finally:
        os.umask(old)
    assert json.loads((tmp_path / "results.json").read_text()) == {"hm": 1.0}
    for path in (tmp_path / "results.json", tmp_path / "sub" / "prompts.safetensors"):
        assert path.stat().st_mode & 0o777 == 0o640, oct(path.stat().st_mode)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["prompts.safetensors", "results.json", "sub"]


def test_eval_script_refuses_a_run_dir_without_results_before_creating_it(tmp_path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_script", Path(__file__).parents[1] / "scripts" / "eval.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    missing = tmp_path / "outputs" / "typo"
    with pytest.raises(ConfigurationError, match="No results.json in .*typo"):
        script.check_run_dir(["trainer.enable_progress_bar=false", f"run_dir={missing}"])
    assert not missing.exists()
    (missing / "results.json").parent.mkdir(parents=True)
    (missing / "results.json").write_text("{}")
    script.check_run_dir([f"run_dir={missing}"])  # a finished run passes
