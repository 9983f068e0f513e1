"""Tip-Adapter and Tip-Adapter-F against independent computations: the logit formula, the cache of averaged
augmented passes, the official search grid and its tie rule, classes without cache entries, Tip-F's
optimisation, and whole runs through scripts/train.py in which the test split is read only after calibrate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from prompt_learning.engine.datamodule import PromptDataModule
from prompt_learning.engine.run import evaluate
from prompt_learning.export import load_method
from prompt_learning.methods import create_method
from prompt_learning.methods.tip_adapter import TipAdapter, search_grid

from ..conftest import CLASSES, UNSEEN


class Passes:
    """A StageData whose augmented passes differ (pass k: the images scaled by 1 + k / 10), and a val split."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels
        self.train_classes, self.device = CLASSES, torch.device("cpu")
        self.passes_read: list[int] = []

    def augmented_pass(self, index: int):
        self.passes_read.append(index)
        return [(self.images[:4] * (1 + index / 10), self.labels[:4]), (self.images[4:] * (1 + index / 10),
                                                                       self.labels[4:])]

    def val_loader(self):
        return [(self.images, self.labels)]


@pytest.fixture
def shots(tiny_backbone):
    size = tiny_backbone.image_size
    images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(3))  # (N, 3, H, W)
    return images, torch.arange(8) % len(CLASSES)


def tip(tiny_backbone, name: str = "tip_adapter", **cfg) -> TipAdapter:
    return create_method({"name": name, "augment_epoch": 3, **cfg}, tiny_backbone, CLASSES)


def test_cache_is_the_normalised_mean_of_unnormalised_features_over_passes(tiny_backbone, shots) -> None:
    method, data = tip(tiny_backbone), Passes(*shots)
    summary = method.prepare(data)
    assert data.passes_read == [0, 1, 2] and summary["cache_entries"] == 8
    with torch.no_grad():
        raw = [tiny_backbone.encode_image(shots[0] * (1 + k / 10)).float() for k in range(3)]  # 3 x (N, D)
    expected = F.normalize(sum(raw) / 3, dim=-1)  # (N, D)
    torch.testing.assert_close(method.cache_keys, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(method.cache_values, F.one_hot(shots[1], len(CLASSES)).float())
    assert "zero-shot" in summary["unseen_classes"]


def test_logits_are_zero_shot_plus_alpha_times_the_cache_votes(tiny_backbone, shots, images) -> None:
    method = tip(tiny_backbone)
    method.prepare(Passes(*shots))
    method.alpha.fill_(1.7)
    method.beta.fill_(4.5)
    f = F.normalize(tiny_backbone.encode_image(images).float(), dim=-1)  # (B, D)
    w = tiny_backbone.zero_shot_text_features(CLASSES.names, [CLASSES.template])  # (C, D)
    keys, values = method.cache_keys, method.cache_values
    expected = tiny_backbone.logit_scale * f @ w.T + 1.7 * torch.exp(-4.5 * (1 - f @ keys.T)) @ values
    torch.testing.assert_close(method(images, CLASSES).logits, expected, atol=1e-4, rtol=1e-5)


def test_classes_without_cache_entries_are_scored_zero_shot(tiny_backbone, shots, images) -> None:
    method = tip(tiny_backbone)
    method.prepare(Passes(*shots))
    method.alpha.fill_(2.0)
    zero_shot = create_method({"name": "zeroshot"}, tiny_backbone, UNSEEN)
    torch.testing.assert_close(method(images, UNSEEN).logits, zero_shot(images, UNSEEN).logits)
    mixed = type(CLASSES)((UNSEEN.names[0], CLASSES.names[2]), CLASSES.template)  # one unseen, one trained
    values = method.values_for(mixed)
    assert values[:, 0].abs().sum() == 0 and torch.equal(values[:, 1], method.cache_values[:, 2])


def test_search_grid_is_the_official_one() -> None:
    official = [i * (7.0 - 0.1) / 200 + 0.1 for i in range(200)]
    torch.testing.assert_close(search_grid(7.0, 200), torch.tensor(official, dtype=torch.float64))


def test_search_picks_the_first_best_pair_in_beta_major_order_on_validation(tiny_backbone, shots) -> None:
    method = tip(tiny_backbone, search_step=[9, 5], search_scale=[6.0, 4.0])
    data = Passes(*shots)
    method.prepare(data)
    features = F.normalize(tiny_backbone.encode_image(shots[0]).float(), dim=-1)  # (N, D)
    w = tiny_backbone.zero_shot_text_features(CLASSES.names, [CLASSES.template])
    best_acc, best = 0.0, None
    for beta in [i * (6.0 - 0.1) / 9 + 0.1 for i in range(9)]:  # the official double loop with a strict ">"
        for alpha in [j * (4.0 - 0.1) / 5 + 0.1 for j in range(5)]:
            logits = tiny_backbone.logit_scale * features @ w.T + alpha * torch.exp(
                -beta * (1 - features @ method.cache_keys.T)) @ method.cache_values
            acc = float((logits.argmax(-1) == shots[1]).float().mean()) * 100
            if acc > best_acc:
                best_acc, best = acc, (alpha, beta)
    summary = method.calibrate(data)
    assert summary["search_split"] == "val" and summary["n_val"] == 8
    assert summary["alpha"] == pytest.approx(best[0]) and summary["beta"] == pytest.approx(best[1])
    assert summary["val_acc"] == pytest.approx(best_acc)
    assert float(method.alpha) == pytest.approx(best[0]) and float(method.beta) == pytest.approx(best[1])


def test_without_a_validation_split_alpha_and_beta_keep_their_initial_values(tiny_backbone, shots) -> None:
    method = tip(tiny_backbone, init_alpha=2.5, init_beta=3.0)
    data = Passes(*shots)
    data.val_loader = lambda: None
    method.prepare(data)
    summary = method.calibrate(data)
    assert summary["search_split"] is None and (summary["alpha"], summary["beta"]) == (2.5, 3.0)


def test_dataset_tables_pick_the_official_settings(tiny_backbone) -> None:
    eurosat = type(CLASSES)(CLASSES.names, CLASSES.template, "eurosat")
    method = create_method({"name": "tip_adapter"}, tiny_backbone, eurosat)
    assert method.search_scale() == [12.0, 10.0] and float(method.alpha) == 2.0
    other = create_method({"name": "tip_adapter"}, tiny_backbone, CLASSES)
    assert other.search_scale() == [7.0, 3.0] and float(other.alpha) == pytest.approx(1.17)


def test_tip_adapter_f_trains_the_keys_with_adamw_and_a_per_step_cosine(tiny_backbone, shots, images) -> None:
    method = tip(tiny_backbone, "tip_adapter_f")
    method.prepare(Passes(*shots))
    assert [n for n, _ in method.named_parameters()] == ["cache_keys"]  # alpha, beta are fixed buffers
    assert sum(p.numel() for p in method.parameters()) == 8 * tiny_backbone.embed_dim  # NK x D
    own = method.configure_optimization({}, max_epochs=2, total_steps=10)
    assert isinstance(own.optimizer, torch.optim.AdamW) and own.interval == "step"
    group = own.optimizer.param_groups[0]
    assert (group["lr"], group["eps"], group["weight_decay"]) == (0.001, 1e-4, 0.01)
    lrs = []
    for _ in range(10):
        lrs.append(own.optimizer.param_groups[0]["lr"])
        own.optimizer.step()
        own.scheduler.step()
    expected = [0.001 * (1 + torch.cos(torch.tensor(k * torch.pi / 10))) / 2 for k in range(10)]
    torch.testing.assert_close(torch.tensor(lrs), torch.stack(expected).float())


def run_dir_of(out: str) -> Path:
    return Path(next(line.split("results: ", 1)[1] for line in out.splitlines() if line.startswith("results: "))).parent


@pytest.mark.parametrize("name", ["tip_adapter", "tip_adapter_f"])
def test_runs_through_train_py_and_reads_the_test_split_only_after_calibrate(name, train_cli, tmp_path, monkeypatch,
                                                                          keep_logging) -> None:
    events: list[str] = []
    for stage in ("prepare", "calibrate"):
        original = getattr(TipAdapter, stage)

        def spy(self, data, original=original, stage=stage):
            events.append(stage)
            return original(self, data)

        monkeypatch.setattr(TipAdapter, stage, spy)
    test_loaders = PromptDataModule.test_dataloader

    def test_dataloader(self):
        events.append("test")
        return test_loaders(self)

    monkeypatch.setattr(PromptDataModule, "test_dataloader", test_dataloader)
    code, out, err = train_cli(f"method={name}", "protocol=few_shot", "backbone=tiny_test", "shots=2",
                               "dataset.test_per_class=2", "dataset.val_per_class=1", "method.augment_epoch=2",
                               "method.search_step=[10,5]", "trainer.max_epochs=2", "logger=none",
                               "data.eval_cache=false", f"paths.output_dir={tmp_path}")
    assert code == 0, err
    # the test split is first read by the final evaluation (Tip-F: then again for the zero-shot reference)
    assert events[:3] == ["prepare", "calibrate", "test"] and set(events[2:]) == {"test"}
    run_dir = run_dir_of(out)
    record = json.loads((run_dir / "results.json").read_text())
    assert record["calibrate"]["search_split"] == "val" and record["prepare"]["augment_epoch"] == 2
    if name == "tip_adapter_f":
        assert record["epochs_trained"] == 2 and "last epoch" in record["calibrate"]["selection"]
    reloaded = load_method(run_dir / "export")
    assert reloaded.cache_keys.shape[0] == record["n_train_images"]
    assert float(reloaded.alpha) == pytest.approx(record["calibrate"]["alpha"])
    retested = evaluate(str(run_dir))  # scripts/eval.py: the export on the run's (re-seeded) backbone and test split
    assert retested["metrics"] == record["metrics"]
