"""The whole zoo: ViT-B/16 parameter counts (docs/methods/README.md), capability errors, and one short
training run of every method through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prompt_learning import FrozenCLIP
from prompt_learning.engine.run import train_and_test
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method, list_methods

from ..conftest import CLASSES, teacher_keys

# (method, config overrides, trainable parameters on ViT-B/16) -- docs/methods/README.md
VIT_B16_COUNTS = [
    ("coop", {}, 8_192),
    ("coop", {"ctx_init": "a photo of a"}, 2_048),
    ("cocoop", {}, 2_048 + 33_312),
    ("vpt", {}, 12 * 8 * 768),
    ("language_deep", {}, 12 * 4 * 512),
    ("ivlp", {}, 12 * 2 * 512 + 12 * 2 * 768),
    ("ivlp", {"n_ctx_text": 4, "n_ctx_vision": 4, "depth_text": 9, "depth_vision": 9}, 46_080),
    ("promptsrc", {}, 9 * 4 * 512 + 9 * 4 * 768),
    ("maple", {}, 9 * 2 * 512 + 9 * (512 * 768 + 768)),  # = 3,555,072
    ("kgcoop", {}, 2_048),
    ("prograd", {}, 8_192),
    ("pre", {}, 2_048 + 2 * 4 * (256 * (512 + 256) + 2 * 256)),  # = 1,579,008
    ("clip_adapter", {}, 2 * 512 * 128),  # = 131,072
    ("tpt", {}, 2_048),  # tuned per test image
    ("tip_adapter", {}, 0),
    ("upl", {}, 8_192),
    ("promptkd", {"teacher_dim": 768}, 27_648 + 986_112),  # = 1,013,760 (a ViT-L/14 teacher: joint dim 768)
    ("proda", {}, 32 * 16 * 512),  # = 262,144
    ("gopro", {}, 2_048 + 2 * 12 * (768 * 512 + 512) + 13 + (512 * 512 + 512) + 2 * 512),  # = 9,715,213
    ("rpo", {"n_prompts": 24}, 24 * 512 + 24 * 768),  # = 30,720
    ("rpo", {}, 4 * 512 + 4 * 768),  # K = 4 (main_K4.yaml) = 5,120
    ("bayes_pl", {}, 2_048 + 2 * 512),  # = 3,072
    # default template groups (4 experts, 19 tokens) + gate + w + ViT ln_1/ln_2 copies; Pets: test below
    ("mocoop", {}, 19 * 512 + (512 + 1) * 4 + 512 + 12 * 2 * 2 * 768),  # = 49,156
    ("bayes_pl", {"posterior": "conditional"},
     2_048 + 2 * (512 * 256 + 256 + 256 * 256 + 256 + 256 * 512 + 512)),  # = 659,456
]


def test_tip_adapter_f_trains_one_key_per_cached_image(vit_b16: FrozenCLIP) -> None:
    """16-shot ImageNet: 16,000 keys of D = 512 (8,192,000 parameters); Caltech101 16-shot: 819,200."""
    for n_classes, expected in ((1000, 8_192_000), (100, 819_200)):
        classes = type(CLASSES)(tuple(f"class {i}" for i in range(n_classes)))
        method = create_method({"name": "tip_adapter_f"}, vit_b16, classes)
        method._set_cache(torch.zeros(16 * n_classes, vit_b16.embed_dim), torch.zeros(16 * n_classes, n_classes))
        assert sum(p.numel() for p in method.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize("name,overrides,expected", VIT_B16_COUNTS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_trainable_parameter_counts_on_vit_b16(vit_b16: FrozenCLIP, name: str, overrides: dict, expected: int) -> None:
    method = create_method({"name": name, **overrides}, vit_b16, CLASSES)
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == expected


def test_mocoop_count_on_oxford_pets(vit_b16: FrozenCLIP) -> None:
    """Pets' 6 experts hold 29 template tokens: 14,848 + gate 3,078 + w 512 + LayerNorm copies 36,864."""
    pets = type(CLASSES)(CLASSES.names, dataset="oxford_pets")
    method = create_method({"name": "mocoop"}, vit_b16, pets)
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 29 * 512 + 513 * 6 + 512 + 36_864 == 55_302


def test_spec_figures() -> None:
    counts = {(n, tuple(o.items())): e for n, o, e in VIT_B16_COUNTS}
    assert counts[("cocoop", ())] == 35_360 and counts[("ivlp", ())] == 30_720
    assert counts[("maple", ())] == 3_555_072 and counts[("pre", ())] == 1_579_008


# methods that need a ViT image tower: they prompt it, or read its blocks' outputs (GOPro)
VISION_METHODS = sorted(n for n, c in list_methods().items() if c.touches_image_tower or c.reads_hidden_states)
TEXT_METHODS = sorted(set(list_methods()) - set(VISION_METHODS))


def test_flags_split_the_zoo() -> None:
    assert set(VISION_METHODS) == {"vpt", "ivlp", "maple", "promptsrc", "promptkd", "rpo", "gopro", "mocoop"}
    assert {"coop", "cocoop", "kgcoop", "prograd", "pre", "language_deep", "linear_probe"} <= set(TEXT_METHODS)


@pytest.fixture(scope="module")
def resnet_backbone() -> FrozenCLIP:
    torch.manual_seed(0)
    return FrozenCLIP("tiny_test_resnet")


@pytest.mark.parametrize("name", VISION_METHODS)
def test_vision_methods_refuse_a_resnet_image_tower_at_setup(name: str, resnet_backbone: FrozenCLIP) -> None:
    with pytest.raises(ConfigurationError) as info:
        create_method({"name": name}, resnet_backbone, CLASSES)
    message = str(info.value)
    assert f"method {name!r}" in message and "ViT" in message and "tiny_test_resnet" in message
    assert "coop" in message and "kgcoop" in message  # the methods that would work


@pytest.mark.parametrize("name", [n for n in TEXT_METHODS if n != "zeroshot"])
def test_text_methods_run_on_a_resnet_image_tower(name: str, resnet_backbone: FrozenCLIP) -> None:
    images = torch.randn(2, 3, resnet_backbone.image_size, resnet_backbone.image_size)
    out = create_method({"name": name}, resnet_backbone, CLASSES)(images, CLASSES)
    assert out.logits.shape == (2, len(CLASSES))


def test_depth_beyond_the_tower_prompts_every_block(tiny_backbone: FrozenCLIP, caplog) -> None:
    method = create_method({"name": "ivlp", "depth_text": 12, "depth_vision": 12}, tiny_backbone, CLASSES)
    assert method.text_deep.layers == [1] and method.vision_prompts.layers == [0, 1]  # tiny_test: 2 blocks
    assert "method.depth_text=12" in caplog.text and "2 blocks" in caplog.text
    with pytest.raises(ConfigurationError, match="method.depth"):
        create_method({"name": "vpt", "depth": -1}, tiny_backbone, CLASSES)


TRAINED = [n for n, c in list_methods().items() if c.trainable and c.supports_unseen_classes]


@pytest.mark.parametrize("name", TRAINED)
def test_every_method_trains_and_tests_base_to_new(run_cfg, name: str, kd_teacher: dict) -> None:
    teacher = [f"method.{k}={v}" for k, v in teacher_keys(name, kd_teacher).items()]  # PromptKD: the tiny teacher
    cfg = run_cfg(f"method={name}", "trainer.max_epochs=1", "data.batch_size=4", "protocol.eval_zero_shot=false",
                  "dataset.train_per_class=4", *teacher)  # unlabeled methods read the whole training split
    record = train_and_test(cfg)
    assert set(record["metrics"]) == {"base", "new"} and 0 <= record["hm"] <= 100
    exported = json.loads((Path(cfg.paths.run_dir) / "export" / "prompt_config.json").read_text())
    assert exported["method"]["name"] == name


def test_linear_probe_is_refused_for_base_to_new_before_training(run_cfg) -> None:
    with pytest.raises(ConfigurationError, match="protocol=few_shot"):
        train_and_test(run_cfg("method=linear_probe", "protocol=base2new"))
