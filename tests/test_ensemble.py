"""Seed ensembles (scripts/ensemble.py): the ensemble's accuracy, ECE and NLL equal those of an independent mean of
the members' probabilities, members must share data and backbone, and the command prints and writes the result."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from prompt_learning.cli.ensemble import main
from prompt_learning.config import compose_config
from prompt_learning.engine.builders import build_data
from prompt_learning.engine.ensemble import ensemble_path, evaluate_ensemble
from prompt_learning.engine.run import to_spec, train_and_test
from prompt_learning.engine.setup import build_backbone
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method

from .test_calibration import reference_ece, reference_nll


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory, tiny_backbone):
    """Three CoOp runs (seeds 1-3) on one fixed tiny backbone (a weights file: every seed loads the same)."""
    root = tmp_path_factory.mktemp("ensemble")
    weights = root / "tiny_test.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, weights)
    runs = []
    for seed in (1, 2, 3):
        cfg = compose_config(["backbone=tiny_test", "trainer.enable_progress_bar=false", "shots=2", "logger=none",
                              "dataset.test_per_class=2", "dataset.val_per_class=1", f"paths.output_dir={root}",
                              "method=coop", f"seed={seed}", f"backbone.pretrained={weights}", "trainer.max_epochs=1",
                              "protocol.eval_zero_shot=false", "data.eval_cache=false"])
        train_and_test(cfg)
        runs.append((cfg, cfg.paths.run_dir))
    return runs


def test_the_ensemble_is_the_mean_of_the_members_probabilities(three_seeds) -> None:
    record = evaluate_ensemble([run_dir for _, run_dir in three_seeds])
    spec = to_spec(three_seeds[0][0])
    backbone = build_backbone(spec)
    task, dm = build_data(spec, backbone)
    for e, loader in zip(task.evals, dm.test_dataloader(), strict=True):
        images, labels = map(torch.cat, zip(*loader, strict=True))
        with torch.no_grad():
            probs = sum(load_method(f"{d}/export", backbone)(images, e.classes).logits.softmax(-1)
                        for _, d in three_seeds)  # (N, C)
        expected = 100.0 * float((probs.argmax(-1) == labels).float().mean())
        assert record["metrics"][e.name]["acc"] == pytest.approx(expected)
        mean_p = (probs.double() / 3).numpy()  # (N, C) the ensemble's probabilities
        assert record["metrics"][e.name]["nll"] == pytest.approx(reference_nll(np.log(mean_p), labels.numpy()), rel=1e-4)
        assert record["metrics"][e.name]["ece"] == pytest.approx(reference_ece(mean_p, labels.numpy()), abs=1e-3)
    assert record["members"] == 3 and record["seeds"] == [1, 2, 3] and "hm" in record
    written = json.loads(ensemble_path([d for _, d in three_seeds]).read_text())
    assert written["metrics"] == record["metrics"]


def test_members_must_share_data_and_backbone(three_seeds, run_cfg) -> None:
    other = run_cfg("method=coop", "protocol=few_shot", "trainer.max_epochs=1", "protocol.eval_zero_shot=false")
    train_and_test(other)
    with pytest.raises(ConfigurationError, match="another protocol"):
        evaluate_ensemble([three_seeds[0][1], other.paths.run_dir])
    with pytest.raises(ConfigurationError, match="at least two"):
        evaluate_ensemble([three_seeds[0][1]])


def test_random_weight_backbones_are_refused_across_seeds(run_cfg) -> None:
    dirs = []
    for seed in (1, 2):
        cfg = run_cfg("method=coop", f"seed={seed}", "trainer.max_epochs=1", "protocol.eval_zero_shot=false")
        train_and_test(cfg)
        dirs.append(cfg.paths.run_dir)
    with pytest.raises(ConfigurationError, match="random weights"):
        evaluate_ensemble(dirs)


def test_the_command_prints_the_table_and_the_file(three_seeds, capsys) -> None:
    main([run_dir for _, run_dir in three_seeds])
    out = capsys.readouterr().out
    assert "ensemble of 3" in out and "ensemble-" in out and "ECE (%, 15 bins) / NLL (nats)" in out
