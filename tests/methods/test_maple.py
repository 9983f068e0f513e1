"""MaPLe: vision prompts are the couplers' outputs of the text prompts, layer by layer."""

from __future__ import annotations

import torch

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method

from ..conftest import CLASSES
from .test_ivlp import manual_vision_features


def test_vision_prompts_are_coupled_text_prompts(tiny_backbone: FrozenCLIP, images) -> None:
    method = create_method({"name": "maple", "depth": 2}, tiny_backbone, CLASSES)
    text = method.text_layer_prompts()
    vision = method.vision_layer_prompts()
    assert sorted(text) == sorted(vision) == [0, 1]
    for layer, coupler in enumerate(method.couplers.layers):
        torch.testing.assert_close(vision[layer], text[layer] @ coupler.weight.T + coupler.bias)
    torch.testing.assert_close(method.encode_images(images), manual_vision_features(tiny_backbone, images, vision),
                               atol=1e-5, rtol=1e-5)
    names = [n for n, _ in method.named_parameters()]
    assert not any(n.startswith("vision") for n in names)  # no free vision-prompt parameters


def test_image_branch_gradients_reach_the_text_prompts(tiny_backbone: FrozenCLIP, images) -> None:
    method = create_method({"name": "maple", "depth": 2}, tiny_backbone, CLASSES)
    method.encode_images(images).sum().backward()  # a loss on image features only
    assert method.context.ctx.grad.abs().sum() > 0
    assert method.text_deep.prompts["layer_1"].grad.abs().sum() > 0


def test_deep_couplers_start_identical_and_layer_zero_apart(vit_b16: FrozenCLIP) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "maple"}, vit_b16, CLASSES)
    layers = method.couplers.layers
    assert len(layers) == 9 and layers[0].weight.shape == (768, 512)
    assert all(torch.equal(layers[1].weight, layer.weight) for layer in layers[2:])
    assert not torch.equal(layers[0].weight, layers[1].weight)
    assert layers[1].weight.data_ptr() != layers[2].weight.data_ptr()  # copies, not one shared module
    cross_dataset = create_method({"name": "maple", "depth": 3}, vit_b16, CLASSES)
    assert len(cross_dataset.couplers.layers) == 3 and cross_dataset.text_deep.layers == [1, 2]
