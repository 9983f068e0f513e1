"""data.feature_cache.train_views: text-only methods train on cached features of K augmented views."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from prompt_learning.data import train_views
from prompt_learning.data.image_dataset import EpochSeededSampler
from prompt_learning.data.train_views import TrainViewsSampler, encode_views, view_seed
from prompt_learning.engine.module import PromptLearningModule
from prompt_learning.engine.run import (
    build_backbone,
    build_data,
    computed_settings,
    train_and_test,
    train_views_for,
    validate_choices,
)
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method


def test_view_features_equal_encode_images_of_the_seeded_augmentation(run_cfg) -> None:
    cfg = run_cfg("dataset.train_transform=random_resized_crop")
    backbone = build_backbone(cfg)
    task, dm = build_data(cfg, backbone)
    method = create_method({"name": "coop"}, backbone, task.train_classes)
    items = task.train[:5]
    features = encode_views(method.encode_images, items, dm.load_image, dm.train_transform, 3, 7,
                            torch.device("cpu"), batch_size=2)  # (K, N, D)
    assert features.shape == (3, 5, backbone.embed_dim) and features.dtype == torch.float32
    for k, i in [(0, 0), (1, 3), (2, 4)]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(7, k, i))
            image = dm.train_transform(dm.load_image(items[i].ref))  # (3, H, W)
        with torch.no_grad():
            expected = method.encode_images(image.unsqueeze(0))[0]  # (D,)
        torch.testing.assert_close(features[k, i], expected)
    assert not torch.allclose(features[0], features[1])  # the views differ


def test_views_sampler_keeps_the_image_order_and_cycles_views() -> None:
    n, k = 10, 3
    sampler, images = TrainViewsSampler(n, seed=4, views=k), EpochSeededSampler(n, seed=4)
    seen: dict[int, set[int]] = {i: set() for i in range(n)}
    for epoch in range(k):
        sampler.set_epoch(epoch)
        images.set_epoch(epoch)
        pairs = list(sampler)
        assert [i for i, _ in pairs] == [i for i, _ in images]  # same batch composition as the image path
        for i, view in pairs:
            seen[i].add(view)
    assert all(views == set(range(k)) for views in seen.values())  # K epochs: each view of each image once


@pytest.mark.parametrize("name", ["coop", "cocoop"])
def test_feature_step_matches_the_image_forward_and_only_prompts_get_gradients(name, tiny_backbone, images) -> None:
    from tests.conftest import CLASSES

    method = create_method({"name": name}, tiny_backbone, CLASSES)
    module = PromptLearningModule(tiny_backbone, method, CLASSES, [("all", CLASSES)])
    with torch.no_grad():
        features = method.encode_images(images)  # (B, D): what the cache stores
    torch.testing.assert_close(method.forward_features(features, CLASSES).logits, method(images, CLASSES).logits)
    module.training_step((features, torch.tensor([0, 1, 2])), 0).backward()
    learned = {n for n, p in method.named_parameters() if p.requires_grad}
    assert learned and all(p.grad is not None for n, p in method.named_parameters() if n in learned)
    assert any(float(p.grad.abs().sum()) > 0 for p in method.parameters() if p.requires_grad)
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_negative_train_views_is_refused(run_cfg) -> None:
    with pytest.raises(ConfigurationError, match="data.feature_cache.train_views=-1"):
        validate_choices(run_cfg("data.feature_cache.train_views=-1"))


def test_train_views_enter_the_fingerprint_only_when_on(run_cfg) -> None:
    assert not any(k.startswith("data.feature_cache") for k in computed_settings(run_cfg()))
    assert computed_settings(run_cfg("data.feature_cache.train_views=2"))["data.feature_cache"] == {"train_views": 2}


@pytest.mark.parametrize(("overrides", "why"), [(["method=promptsrc", "method.n_ctx_vision=0"], "forward computes"),
                                                (["method=linear_probe"], "not trained by gradient descent")])
def test_methods_that_need_images_ignore_the_cache(run_cfg, tiny_backbone, caplog, overrides, why) -> None:
    """Text-only PromptSRC still needs the images (its frozen-feature targets); linear probe fits on features."""
    from tests.conftest import CLASSES

    cfg = run_cfg(*overrides, "data.feature_cache.train_views=2")
    method = create_method(OmegaConf.to_container(cfg.method, resolve=True), tiny_backbone, CLASSES)
    assert not method.touches_image_tower
    with caplog.at_level(logging.WARNING):
        assert train_views_for(cfg, method, world_size=1) == 0
    assert why in caplog.text


def test_coop_trains_on_cached_views_and_reuses_the_disk_cache(run_cfg, tmp_path: Path, monkeypatch) -> None:
    overrides = ("backbone=tiny_synthetic", "protocol.eval_zero_shot=false", "data.feature_cache.train_views=2",
                 f"data.cache_dir={tmp_path / 'c' / 'eval'}", "dataset.train_transform=random_resized_crop")
    first = train_and_test(run_cfg(*overrides, f"paths.output_dir={tmp_path / 'a'}"))
    assert first["train_views"] == 2
    assert all(math.isfinite(m["acc"]) for m in first["metrics"].values()) and math.isfinite(first["hm"])
    cached = list((tmp_path / "c" / "train_views").glob("*.safetensors"))
    assert len(cached) == 1 and train_views.load_file(cached[0])["features"].shape[:2] == (2, first["n_train_images"])

    def no_encoding(*args, **kwargs):
        raise AssertionError("the training views should have been read from the cache")

    monkeypatch.setattr(train_views, "encode_views", no_encoding)
    second = train_and_test(run_cfg(*overrides, f"paths.output_dir={tmp_path / 'b'}"))
    assert second["metrics"] == first["metrics"] and second["train_views"] == 2


def test_image_tower_method_warns_and_trains_on_images(run_cfg, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        record = train_and_test(run_cfg("method=vpt", "protocol.eval_zero_shot=false", "trainer.max_epochs=1",
                                        "data.feature_cache.train_views=2"))
    assert "ignored for method 'vpt'" in caplog.text and "image tower" in caplog.text
    assert record["train_views"] == 0 and math.isfinite(record["hm"])


def test_killed_run_on_cached_views_resumes_to_the_same_prompts(run_cfg, tmp_path: Path) -> None:
    """The view of each image depends on (seed, epoch, image) only, so a resumed run ends bit for bit the same."""
    from tests.test_engine import Interrupt, learned

    common = ("trainer.max_epochs=3", "data.feature_cache.train_views=2", "protocol.eval_zero_shot=false")
    uninterrupted = train_and_test(run_cfg(*common, f"paths.output_dir={tmp_path}/a"))
    cfg = run_cfg(*common, f"paths.output_dir={tmp_path}/b")
    with pytest.raises(RuntimeError, match="simulated kill"):
        train_and_test(cfg, callbacks=[Interrupt(epoch=2)])
    resumed = train_and_test(cfg)
    a, b = learned(uninterrupted), learned(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == uninterrupted["metrics"] and resumed["train_views"] == 2
