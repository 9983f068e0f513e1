"""Calibration metrics (docs/protocols.md, "Metrics of a run"): ECE against a hand-written binning loop, NLL
against F.cross_entropy, declared log-probabilities read as they are, the values in a real run's results.json,
their aggregation over seeds, the seed ensemble's, and the record of how the tested model was selected."""

from __future__ import annotations

import csv
import importlib
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from prompt_learning.engine.bookkeeping import model_selection
from prompt_learning.engine.builders import build_data
from prompt_learning.engine.ensemble import combined, ensemble_calibration
from prompt_learning.engine.module import CalibrationMetrics, PromptLearningModule, log_probabilities
from prompt_learning.engine.run import to_spec, train_and_test
from prompt_learning.engine.setup import build_backbone
from prompt_learning.export import load_method
from prompt_learning.methods import create_method
from prompt_learning.methods.zeroshot import ZeroShotCLIP
from prompt_learning.results import AggregationWarning, aggregate, to_csv, to_markdown

from .conftest import CLASSES
from .test_host_syncs import DeviceReads

# ---------------------------------------------------------------------- independent reference computations


def reference_ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE (%) as Guo et al. (2017) define it, one sample at a time: 15 equal-width bins (k/15, (k+1)/15] of
    the top-1 confidence, sum over bins of |accuracy - mean confidence| * n_bin / N."""
    n = len(labels)
    members: list[list[int]] = [[] for _ in range(bins)]
    for i in range(n):
        confidence = max(probs[i])
        k = min(int(math.ceil(confidence * bins)) - 1, bins - 1)  # (k/15, (k+1)/15]
        members[max(k, 0)].append(i)
    total = 0.0
    for group in members:
        if group:
            accuracy = sum(int(np.argmax(probs[i]) == labels[i]) for i in group) / len(group)
            confidence = sum(float(max(probs[i])) for i in group) / len(group)
            total += abs(accuracy - confidence) * len(group) / n
    return 100.0 * total


def reference_nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    return -sum(float(log_probs[i, y]) for i, y in enumerate(labels)) / len(labels)


def fake_scores(n: int = 600, classes: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) logits of every sharpness (confidences across all bins) and (N,) labels, right 60% of the time."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * torch.empty(n, 1).uniform_(0.3, 5.0, generator=g)  # (N, C)
    right = torch.rand(n, generator=g) < 0.6
    labels = torch.where(right, logits.argmax(-1), torch.randint(0, classes, (n,), generator=g))  # (N,)
    return logits, labels


def in_batches(metrics: CalibrationMetrics, log_probs: torch.Tensor, labels: torch.Tensor, size: int = 64) -> None:
    for start in range(0, len(labels), size):
        metrics.update(log_probs[start:start + size], labels[start:start + size])


# ---------------------------------------------------------------------- the metrics


def test_ece_matches_a_hand_written_binning_loop() -> None:
    logits, labels = fake_scores()
    metrics = CalibrationMetrics(logits.shape[1])
    in_batches(metrics, log_probabilities(logits, are_log_probs=False), labels)
    probs = logits.double().softmax(-1).numpy()
    result = metrics.compute()
    confidences = probs.max(1)
    assert len({min(int(c * 15), 14) for c in confidences}) >= 12  # the data fills most bins
    assert result["ece"] == pytest.approx(reference_ece(probs, labels.numpy()), abs=1e-4)
    assert 1.0 < result["ece"] < 60.0  # miscalibrated on purpose: a zero would not test the binning


def test_nll_is_the_mean_cross_entropy_in_nats() -> None:
    logits, labels = fake_scores(seed=1)
    metrics = CalibrationMetrics(logits.shape[1])
    in_batches(metrics, log_probabilities(logits, are_log_probs=False), labels, size=50)
    assert metrics.compute()["nll"] == pytest.approx(float(F.cross_entropy(logits.double(), labels)), rel=1e-6)
    metrics.reset()
    with pytest.warns(UserWarning, match="called before the ``update``"):
        assert metrics.compute() == {"ece": None, "nll": None}  # no samples: no value


def test_declared_log_probabilities_are_read_as_they_are() -> None:
    """A log-probability output is neither renormalised nor softened: an output whose probabilities sum to
    e^-0.25 gets the NLL + 0.25 and confidences scaled by e^-0.25; read as logits it would be renormalised."""
    logits, labels = fake_scores(seed=2)
    log_p = logits.log_softmax(-1) - 0.25  # (N, C) total mass e^-0.25
    assert torch.equal(log_probabilities(log_p, are_log_probs=True), log_p)
    declared, as_logits = CalibrationMetrics(7), CalibrationMetrics(7)
    in_batches(declared, log_probabilities(log_p, are_log_probs=True), labels)
    in_batches(as_logits, log_probabilities(log_p, are_log_probs=False), labels)
    ref = log_p.double().numpy()
    assert declared.compute()["nll"] == pytest.approx(reference_nll(ref, labels.numpy()), rel=1e-6)
    assert declared.compute()["nll"] == pytest.approx(as_logits.compute()["nll"] + 0.25, rel=1e-6)
    assert declared.compute()["ece"] == pytest.approx(reference_ece(np.exp(ref), labels.numpy()), abs=1e-4)
    assert declared.compute()["ece"] != pytest.approx(as_logits.compute()["ece"], abs=0.5)


def test_nll_of_a_zero_probability_is_recorded_as_null() -> None:
    log_p = torch.tensor([[0.0, -math.inf], [-0.1, -2.4]])  # the first sample's true class (1) has p = 0
    metrics = CalibrationMetrics(2)
    metrics.update(log_p, torch.tensor([1, 0]))
    assert metrics.compute()["nll"] is None and metrics.compute()["ece"] is not None


def test_an_update_reads_nothing_back_from_the_device(monkeypatch) -> None:
    """No host read per batch. torchmetrics checks on a CPU tensor (only there) whether it got probabilities;
    on a GPU it decides with torch.where, which for probabilities keeps them: that branch stands in here."""
    calibration_error = importlib.import_module("torchmetrics.functional.classification.calibration_error")
    monkeypatch.setattr(calibration_error, "normalize_logits_if_needed", lambda tensor, normalization: tensor)
    logits, labels = fake_scores(n=32)
    metrics = CalibrationMetrics(7)
    with DeviceReads() as probe:
        for _ in range(3):
            metrics.update(log_probabilities(logits, are_log_probs=False), labels)
    assert probe.reads == []


# ---------------------------------------------------------------------- through the Lightning module


class SubNormalisedZeroShot(ZeroShotCLIP):
    """Zero-shot CLIP whose logits are its log-probabilities less 0.25 (total mass e^-0.25), declared so."""

    logits_are_log_probs = True

    def forward_features(self, image_features, classes, text_features=None):
        out = super().forward_features(image_features, classes, text_features)
        out.logits = out.logits.log_softmax(-1) - 0.25  # (B, C)
        return out


@pytest.mark.parametrize("declared", [False, True])
def test_test_steps_give_the_metrics_of_the_methods_output(tiny_backbone, declared: bool) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "zeroshot"}, tiny_backbone, CLASSES)
    if declared:
        method = SubNormalisedZeroShot(method.cfg, tiny_backbone, CLASSES)
    size = tiny_backbone.image_size
    images = torch.randn(12, 3, size, size, generator=torch.Generator().manual_seed(3))  # (N, 3, H, W)
    labels = torch.arange(12) % len(CLASSES)
    module = PromptLearningModule(tiny_backbone, method, CLASSES, [("all", CLASSES)])
    module.on_test_epoch_start()
    for batch in ((images[:5], labels[:5]), (images[5:], labels[5:])):
        module.test_step(batch, 0)
    module.on_test_epoch_end()
    with torch.no_grad():
        logits = method(images, CLASSES).logits.double()  # (N, C)
    log_p = (logits if declared else logits.log_softmax(-1)).numpy()
    result = module.test_calibration_results["all"]
    assert result["nll"] == pytest.approx(reference_nll(log_p, labels.numpy()), rel=1e-5)
    assert result["ece"] == pytest.approx(reference_ece(np.exp(log_p), labels.numpy()), abs=1e-3)
    assert module.test_results["all"] == pytest.approx(100.0 * float((logits.argmax(-1) == labels).double().mean()))


@pytest.fixture(scope="module")
def zero_shot_run(tmp_path_factory, tiny_backbone):
    """A finished few-shot run of zero-shot CLIP on the tiny backbone, its weights in a file (so that the test
    rebuilds the same backbone) and so scored from the cached frozen image features."""
    from prompt_learning.config import compose_config

    root = tmp_path_factory.mktemp("calibration")
    weights = root / "tiny_test.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, weights)
    cfg = compose_config(["backbone=tiny_test", f"backbone.pretrained={weights}", "trainer.enable_progress_bar=false",
                          "logger=none", "shots=2", "dataset.test_per_class=3", "dataset.val_per_class=1",
                          "protocol=few_shot", "method=zeroshot", f"paths.output_dir={root}",
                          f"data.cache_dir={root / 'cache' / 'eval'}"])
    return cfg, train_and_test(cfg)


def test_a_runs_results_json_holds_ece_and_nll_of_its_test_logits(zero_shot_run) -> None:
    cfg, record = zero_shot_run
    assert (Path(cfg.data.cache_dir).parent / "image_features").is_dir()  # scored from cached features
    spec = to_spec(cfg)
    backbone = build_backbone(spec)
    task, dm = build_data(spec, backbone)
    method = load_method(Path(cfg.paths.run_dir) / "export", backbone)
    (e,), (loader,) = task.evals, dm.test_dataloader()
    images, labels = map(torch.cat, zip(*loader, strict=True))
    with torch.no_grad():
        log_p = method(images, e.classes).logits.double().log_softmax(-1).numpy()  # (N, C)
    saved = record["metrics"]["all"]
    assert saved["nll"] == pytest.approx(reference_nll(log_p, labels.numpy()), rel=1e-4)
    assert saved["ece"] == pytest.approx(reference_ece(np.exp(log_p), labels.numpy()), abs=1e-3)
    assert record["model_selection"] == {"checkpoint": "not_trained", "selection_splits": [], "selected_by": {}}


# ---------------------------------------------------------------------- model selection


def test_model_selection_names_the_weights_and_every_split_a_choice_read(run_cfg, tiny_backbone) -> None:
    plain, stopped = to_spec(run_cfg()), to_spec(run_cfg("callbacks=early_stopping"))
    coop = create_method({"name": "coop"}, tiny_backbone, CLASSES)
    assert model_selection(plain, coop) == {"checkpoint": "last_epoch", "selection_splits": [], "selected_by": {}}
    assert model_selection(stopped, coop) == {"checkpoint": "last_epoch", "selection_splits": ["val"],
                                              "selected_by": {"callbacks.early_stopping (val/acc)": "val"}}
    probe = create_method({"name": "linear_probe"}, tiny_backbone, CLASSES)
    assert model_selection(stopped, probe, {"C": 0.3, "val_acc": 50.0, "fits": 8}) == {  # SGD callbacks: not run
        "checkpoint": "closed_form_fit", "selection_splits": ["val"], "selected_by": {"fit": "val"}}
    assert model_selection(plain, probe, {"C": 0.3, "val_acc": None, "fits": 1})["selection_splits"] == []
    adapter = create_method({"name": "tip_adapter"}, tiny_backbone, CLASSES)
    assert model_selection(plain, adapter) == {"checkpoint": "not_trained", "selection_splits": ["val"],
                                               "selected_by": {"calibrate": "val"}}


# ---------------------------------------------------------------------- seed ensembles


@pytest.mark.parametrize("declared", [False, True])
def test_ensemble_metrics_are_those_of_its_mean_probabilities(declared: bool) -> None:
    members = [fake_scores(seed=s)[0] for s in (4, 5, 6)]  # (N, C) each
    labels = fake_scores(seed=4)[1]
    method = SimpleNamespace(logits_are_log_probs=declared)
    outputs = [m.log_softmax(-1) if declared else m for m in members]  # what each member's forward returns
    for combine in ("probs", "logits"):
        totals, log_mix = {}, {}
        for out in outputs:
            combined(totals, log_mix, out, method, combine, "all")
        result = ensemble_calibration(totals["all"], log_mix.get("all"), labels, len(members))
        if combine == "probs":
            mean_p = sum(m.double().softmax(-1) for m in members).numpy() / 3  # (N, C)
            log_p = np.log(mean_p)
        else:
            log_p = (sum(o.double() for o in outputs) / 3).log_softmax(-1).numpy()
        assert result["nll"] == pytest.approx(reference_nll(log_p, labels.numpy()), rel=1e-5)
        assert result["ece"] == pytest.approx(reference_ece(np.exp(log_p), labels.numpy()), abs=1e-3)
        assert np.array_equal(totals["all"].argmax(-1).numpy(), log_p.argmax(-1))  # the prediction's distribution


# ---------------------------------------------------------------------- aggregation


def calibrated_runs() -> list[dict]:
    """base2new records of two methods over seeds 1-3 on dtd; maple's seed 3 comes from before the metrics."""
    rng, runs = random.Random(7), []
    for method in ("coop", "maple"):
        for seed in (1, 2, 3):
            metrics = {name: {"acc": rng.uniform(50, 90), "ece": rng.uniform(1, 15), "nll": rng.uniform(0.3, 2)}
                       for name in ("base", "new")}
            if (method, seed) == ("maple", 3):
                metrics = {name: {"acc": m["acc"]} for name, m in metrics.items()}
            runs.append({"schema_version": 2, "method": method, "backbone": {"name": "ViT-B-16"}, "dataset": "dtd",
                         "protocol": "base2new", "shots": 16, "seed": seed, "metrics": metrics, "hm": 1.0})
    return runs


def test_aggregated_csv_and_markdown_carry_ece_and_nll_over_seeds() -> None:
    runs = calibrated_runs()
    with pytest.warns(AggregationWarning, match=r"maple \(backbone ViT-B-16, 16 shots\) on dtd: base ece, base nll, "
                      r"new ece, new nll left blank, the runs of seeds \[3\]"):
        agg = aggregate(runs)
    rows = {(r["method"], r["metric"]): r for r in csv.DictReader(to_csv(agg).splitlines())}
    for name in ("base", "new"):
        for kind in ("ece", "nll"):
            values = [r["metrics"][name][kind] for r in runs if r["method"] == "coop"]
            mean = sum(values) / 3
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)  # population std, as the accuracy's
            row = rows[("coop", name)]
            assert float(row[f"{kind}_mean"]) == pytest.approx(mean, abs=1e-5)
            assert float(row[f"{kind}_std"]) == pytest.approx(std, abs=1e-5)
        assert rows[("maple", name)]["ece_mean"] == rows[("maple", name)]["nll_std"] == ""  # seed 3 lacks them
        assert rows[("maple", name)]["n"] == "3"  # its accuracy still averages every seed
    assert rows[("coop", "hm")]["ece_mean"] == ""
    md = to_markdown(agg)
    section = md[md.index("## Calibration"):]
    coop_new = agg.calibration[("base2new", "dtd", "coop", "ViT-B-16", 16)]["new"]
    assert (f"| coop | base2new | dtd | ViT-B-16 | 16 | new | {agg.groups[0].metrics['new'].cell()} | "
            f"{coop_new['ece'].cell()} | {coop_new['nll'].mean:.3f} ± {coop_new['nll'].std:.3f} | [1, 2, 3] |"
            in section)
    assert "| maple |" not in section
