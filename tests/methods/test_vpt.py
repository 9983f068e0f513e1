"""VPT-deep: prompts per layer against a hand-written ViT forward; frozen fixed-template text side."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method
from prompt_learning.prompts import ClassSet

from ..conftest import CLASSES
from .test_ivlp import manual_vision_features


def test_image_features_equal_a_hand_written_forward(tiny_backbone: FrozenCLIP, images) -> None:
    torch.manual_seed(2)
    method = create_method({"name": "vpt", "n_tokens": 4, "depth": 2}, tiny_backbone, CLASSES)
    prompts = method.vision_prompts()
    assert sorted(prompts) == [0, 1] and prompts[1].shape == (4, tiny_backbone.vision_width)
    torch.testing.assert_close(method.encode_images(images), manual_vision_features(tiny_backbone, images, prompts),
                               atol=1e-5, rtol=1e-5)


def test_shallow_depth_prompts_the_input_only(tiny_backbone: FrozenCLIP, images) -> None:
    method = create_method({"name": "vpt", "depth": 1}, tiny_backbone, CLASSES)
    assert method.vision_prompts.layers == [0]
    torch.testing.assert_close(method.encode_images(images),
                               manual_vision_features(tiny_backbone, images, method.vision_prompts()),
                               atol=1e-5, rtol=1e-5)


def test_text_side_is_the_fixed_template_not_the_dataset_one(tiny_backbone: FrozenCLIP) -> None:
    classes = ClassSet(CLASSES.names, "{} texture.")
    method = create_method({"name": "vpt"}, tiny_backbone, classes)
    expected = F.normalize(tiny_backbone.encode_text([f"a photo of a {n}." for n in CLASSES.names]), dim=-1)
    torch.testing.assert_close(method.encode_classes(classes), expected)
    assert not any(p.requires_grad for p in [method.encode_classes(classes)])
