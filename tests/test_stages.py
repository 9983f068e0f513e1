"""Each run stage (prepare, closed-form fit, calibrate, adapt/reset, a method-owned loss) exercised through
the engine by a test-only method registered from outside the package (tests/seam_methods.py, loaded as a
plugin). Every test fails when the engine skips its stage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from prompt_learning.engine.run import train_and_test
from prompt_learning.export import load_method
from prompt_learning.methods import METHODS
from prompt_learning.registry import import_plugins, plugin_module_name

PLUGIN = str(Path(__file__).parent / "seam_methods.py")
SEAM_METHODS = ("test_prepare", "test_closed_form", "test_calibrate", "test_adapt", "test_own_loss",
                "test_own_optimizer")


@pytest.fixture
def seams():
    """The plugin module (imported by the first run) with its call counters cleared."""
    import_plugins([PLUGIN])
    module = sys.modules[plugin_module_name(PLUGIN)]
    module.CALLS.clear()
    module.SEEN.clear()
    yield module
    for name in SEAM_METHODS:  # later tests that list every method see the built-in ones only
        METHODS.unregister(name)
    sys.modules.pop(plugin_module_name(PLUGIN), None)


def run(run_cfg, method: str, *extra: str) -> dict:
    cfg = run_cfg(f"plugins=[{PLUGIN}]", f"method={method}",
                  "protocol=few_shot", "protocol.eval_zero_shot=false", *extra)
    return train_and_test(cfg)


def test_methods_registered_outside_the_package_compose_without_a_yaml(seams, run_cfg) -> None:
    from prompt_learning.methods import list_methods

    assert set(SEAM_METHODS) <= set(list_methods())
    cfg = run_cfg(f"plugins=[{PLUGIN}]", "method=test_prepare", "method.scale_offsets=2.0")
    assert cfg.method.name == "test_prepare" and cfg.method.scale_offsets == 2.0


def test_prepare_runs_before_fit_without_gradients_and_may_replace_the_training_set(seams, run_cfg) -> None:
    record = run(run_cfg, "test_prepare")
    assert seams.CALLS["prepare"] == 1 and seams.SEEN["prepare_grad_enabled"] is False
    assert record["prepare"]["n_after"] == (record["prepare"]["n_before"] + 1) // 2
    assert record["n_train_images"] == record["prepare"]["n_after"]  # the replaced set was trained on


def test_closed_form_fit_replaces_sgd(seams, run_cfg) -> None:
    record = run(run_cfg, "test_closed_form", "trainer.max_epochs=5")
    assert seams.CALLS["fit"] == 1 and record["fit"]["n"] == record["n_train_images"]
    assert not list((Path(record["config"]["paths"]["run_dir"]) / "checkpoints").glob("*.ckpt"))  # no SGD epochs
    method = load_method(Path(record["config"]["paths"]["run_dir"]) / "export", seams.SEEN["backbone"])
    expected = seams.SEEN["fit_means"] - method.zero_shot(method.train_classes)  # offset_c = mean_c - t_c
    torch.testing.assert_close(method.offset, expected.to(method.offset), atol=1e-5, rtol=1e-5)


def test_calibrate_runs_after_fit_on_the_validation_split_only(seams, run_cfg) -> None:
    record = run(run_cfg, "test_calibrate")
    assert seams.CALLS["calibrate"] == 1 and seams.SEEN["calibrate_train_refused"] is True
    assert record["calibrate"] == {"n_val": seams.SEEN["calibrate_n_val"], "scale_offsets": 0.5}
    assert record["calibrate"]["n_val"] > 0
    assert record["method_config"]["scale_offsets"] == 0.5  # calibrated after the fit, before the record


def test_test_time_adaptation_resets_and_adapts_each_sample_with_gradients(seams, run_cfg) -> None:
    record = run(run_cfg, "test_adapt", "dataset.test_per_class=1")
    n_test = record["classes"]["all"]  # one test image per class
    assert seams.CALLS["adapt"] == n_test
    assert seams.CALLS["reset"] == n_test + 1  # before every sample, and once after: the export holds the fitted state
    assert seams.SEEN["adapt_grad_enabled"] is True
    assert set(seams.SEEN["offset_norm_before_adapt"]) == {0.0}  # every sample starts from the reset state
    views = seams.SEEN["views"]  # test_views=3 augmentations of each decoded test image
    assert all(v.shape[0] == 3 for v in views)
    assert any(not torch.equal(v[0], v[k]) for v in views for k in (1, 2))  # augmented (synthetic: random flips)


def test_a_method_owned_loss_is_what_the_engine_minimises(seams, run_cfg, tiny_backbone) -> None:
    record = run(run_cfg, "test_own_loss", "trainer.max_epochs=3")
    assert seams.CALLS["loss"] > 0
    method = load_method(Path(record["config"]["paths"]["run_dir"]) / "export", tiny_backbone)
    # CE would move each class's offset differently; the pull loss moves every entry towards 0.01 alike
    moved = method.offset.detach()
    assert float(moved.mean()) > 0 and float(moved.std()) < 1e-6


def test_a_method_owned_optimization_replaces_the_shared_sgd(seams, run_cfg, tiny_backbone) -> None:
    record = run(run_cfg, "test_own_optimizer", "trainer.max_epochs=2")
    steps = seams.SEEN["total_steps"]
    assert seams.CALLS["configure_optimization"] == 1 and steps > 0
    assert seams.CALLS["scheduler_step"] == steps + 1  # per step (LambdaLR also calls it once when built)
    method = load_method(Path(record["config"]["paths"]["run_dir"]) / "export", tiny_backbone)
    moved = float((method.offset.detach() - seams.SEEN["start"]).norm())
    assert 0 < moved <= steps * 1e-3 + 1e-6  # lr 1, but every step clipped to norm 1e-3
