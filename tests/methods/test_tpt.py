"""TPT against independent computations: the selected views, the marginal entropy, one AdamW step, a reset
that restores the prompt and the optimiser bit for bit; starting points (zero-shot, CoOp / PRE / deep language
exports, CoCoOp refused); the export, predict with PIL images, and a run through scripts/train.py."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from prompt_learning import PromptedCLIP
from prompt_learning.errors import ConfigurationError, DataError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.stages import adapted_logits
from prompt_learning.methods.tpt import confident_views, marginal_entropy, tuned_parameter_count, view_entropy

from ..conftest import CLASSES, UNSEEN


@pytest.fixture
def views(tiny_backbone) -> torch.Tensor:
    size = tiny_backbone.image_size
    return torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(5))  # (1 + V, 3, H, W)


def tpt(backbone, **cfg):
    torch.manual_seed(0)
    return create_method({"name": "tpt", "views": 15, **cfg}, backbone, CLASSES)


def test_selection_keeps_the_lowest_entropy_tenth_and_the_loss_is_the_entropy_of_the_mean() -> None:
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(0)) * 3  # (V, C)
    probs = logits.softmax(-1)
    entropy = -(probs * probs.log()).sum(-1)  # (V,)
    torch.testing.assert_close(view_entropy(logits), entropy)
    selected = confident_views(logits, 0.1)
    assert len(selected) == 6  # int(0.1 * 64), not 6.4
    assert set(selected.tolist()) == set(entropy.sort().indices[:6].tolist())
    mean = probs[selected].mean(0)  # (C,)
    torch.testing.assert_close(marginal_entropy(logits[selected]), -(mean * mean.log()).sum())


def test_one_adapt_step_is_one_adamw_step_on_the_marginal_entropy(tiny_backbone, views) -> None:
    method = tpt(tiny_backbone)
    ctx = method.base.context.ctx
    start = ctx.detach().clone()
    logits = method.base(views, CLASSES).logits  # (1 + V, C), the prompt before the step
    loss = marginal_entropy(logits[confident_views(logits, 0.1)])
    (grad,) = torch.autograd.grad(loss, [ctx])
    lr, wd, eps = 5e-3, 0.01, 1e-8
    # AdamW's first step: decoupled decay, then m_hat = g and v_hat = g^2 (bias-corrected)
    expected = start * (1 - lr * wd) - lr * grad / (grad.abs() + eps)
    method.reset()
    with torch.enable_grad():
        method.adapt(views, CLASSES)
    torch.testing.assert_close(ctx.detach(), expected, atol=1e-7, rtol=1e-5)
    assert tuned_parameter_count(method) == 4 * tiny_backbone.text_width  # "a photo of a": 4 tokens


def test_reset_restores_the_prompt_and_the_optimiser_bit_for_bit(tiny_backbone, views) -> None:
    method = tpt(tiny_backbone)
    start = {k: v.clone() for k, v in method.state_dict().items()}
    first = adapted_logits(method, views, CLASSES)  # (1, C)
    state_after_first = method.optimizer().state_dict()
    assert state_after_first["state"]  # Adam's moments exist after a step
    adapted_logits(method, views.flip(0), CLASSES)  # another image in between
    method.reset()
    assert all(torch.equal(v, start[k]) for k, v in method.state_dict().items())
    assert method.optimizer().state_dict()["state"] == {}
    assert torch.equal(adapted_logits(method, views, CLASSES), first)  # the same image scores the same again
    with torch.no_grad():
        tuned = method.base(views[:1], CLASSES).logits  # the adapted prompt on the eval view
    method.reset()
    with torch.no_grad():
        untuned = method(views[:1], CLASSES).logits
    assert torch.equal(first, tuned) and not torch.equal(first, untuned)  # scored with the adapted prompt


def test_augmix_follows_the_official_switch(tiny_backbone) -> None:
    method = tpt(tiny_backbone)
    imagenet_a = type(CLASSES)(CLASSES.names, CLASSES.template, "imagenet_a")
    pets = type(CLASSES)(CLASSES.names, CLASSES.template, "oxford_pets")
    assert method.augmentation(None, pets).augmix and not method.augmentation(None, imagenet_a).augmix
    assert method.augmentation(None, CLASSES).augmix  # user folders and the synthetic set: AugMix
    assert not tpt(tiny_backbone, augmix="off").augmentation(None, pets).augmix


@pytest.mark.parametrize("base,tuned", [("coop", ["base.context.ctx"]), ("pre", ["base.context.ctx"]),
                                        ("language_deep", None), ("kgcoop", ["base.context.ctx"]),
                                        ("prograd", ["base.context.ctx"]), ("maple", None)])
def test_starts_from_an_export_with_its_logits_and_tunes_its_prompt(base, tuned, tiny_backbone, images, tmp_path
                                                                    ) -> None:
    torch.manual_seed(1)
    trained = create_method({"name": base}, tiny_backbone, CLASSES)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_export(tmp_path / "base", trained, {"epochs": 1})
    method = tpt(tiny_backbone, init_from=str(tmp_path / "base"))
    torch.testing.assert_close(method(images, UNSEEN).logits, trained(images, UNSEEN).logits)
    names = [n for n, p in method.named_parameters() if p.requires_grad]
    assert names == (tuned or [f"base.{n}" for n, _ in trained.named_parameters()])
    # the export records the base: it reloads without the base's directory
    save_export(tmp_path / "tpt", method, {"epochs": 0})
    shutil.rmtree(tmp_path / "base")
    config = json.loads((tmp_path / "tpt" / "prompt_config.json").read_text())["method"]
    assert config["init_from"] == "" and config["base"]["name"] == base
    assert config["initialised_from"] == str(tmp_path / "base")
    reloaded = load_method(tmp_path / "tpt", tiny_backbone)
    assert torch.equal(reloaded(images, UNSEEN).logits, method(images, UNSEEN).logits)
    views = torch.cat([images, images.flip(-1)])  # (1 + V, 3, H, W): adapts, then resets to the export's prompt
    with torch.no_grad():
        before = reloaded(images[:1], UNSEEN).logits
    assert not torch.equal(adapted_logits(reloaded, views, UNSEEN), before)
    reloaded.reset()
    with torch.no_grad():
        assert torch.equal(reloaded(images[:1], UNSEEN).logits, before)


def test_cocoop_is_refused(tiny_backbone, tmp_path) -> None:
    save_export(tmp_path, create_method({"name": "cocoop"}, tiny_backbone, CLASSES), {"epochs": 1})
    with pytest.raises(ConfigurationError, match="generated from each image"):
        tpt(tiny_backbone, init_from=str(tmp_path))


def test_predict_adapts_to_each_pil_image_and_refuses_tensors(tiny_backbone, tmp_path) -> None:
    method = tpt(tiny_backbone, views=3)
    save_export(tmp_path, method, {"epochs": 0})
    model = PromptedCLIP.from_pretrained(tmp_path, tiny_backbone)
    rng = torch.Generator().manual_seed(2)
    pictures = [Image.fromarray((torch.rand(40, 48, 3, generator=rng) * 255).byte().numpy()) for _ in range(2)]
    first = model.predict(pictures, list(UNSEEN.names), top_k=2)
    assert first.probs.shape == (2, len(UNSEEN)) and torch.equal(model.predict(pictures, list(UNSEEN.names)).probs,
                                                                  first.probs)
    plain = model.method.base(torch.stack([model.preprocess(p) for p in pictures]), UNSEEN).logits.softmax(-1)
    assert not torch.allclose(first.probs, plain)  # adapted, not the exported prompt's prediction
    assert torch.equal(model.method.base.context.ctx, method.base.context.ctx)  # reset afterwards
    with pytest.raises(DataError, match="PIL images"):
        model.predict(torch.zeros(1, 3, tiny_backbone.image_size, tiny_backbone.image_size), list(UNSEEN.names))


def test_runs_through_train_py_on_base_to_new(train_cli, tmp_path, keep_logging, monkeypatch) -> None:
    monkeypatch.setattr("prompt_learning.progress.PLAIN_FIRST_LINE_S", 0.0)  # every phase reports, however fast
    code, out, err = train_cli("method=tpt", "method.views=3", "backbone=tiny_test", "shots=1",
                               "dataset.test_per_class=1", "dataset.val_per_class=1", "logger=none",
                               f"paths.output_dir={tmp_path}")
    assert code == 0, err
    run_dir = Path(next(line.split("results: ", 1)[1] for line in out.splitlines() if line.startswith("results: "))
                   ).parent
    record = json.loads((run_dir / "results.json").read_text())
    assert set(record["metrics"]) == {"base", "new"} and math.isfinite(record["hm"])
    assert "epochs_trained" not in record and record["train_time_s"] < 60  # nothing is trained before the test
    assert "images (" in err and "img/s" in err  # the test bar counts images
    reloaded = load_method(run_dir / "export")
    assert reloaded.name == "tpt" and reloaded.test_views == 3
