"""CLIP-Adapter: logits against an independent computation of the official formula (from the unnormalised
image feature), the residual blend, where gradients go, the cached class features, and the ViT-B/16 count."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method
from prompt_learning.methods.clip_adapter import CLIPAdapterConfig
from prompt_learning.prompts import ClassSet

from ..conftest import CLASSES

LABELS = torch.tensor([0, 1, 2])


def adapter_with_known_weights(backbone: FrozenCLIP, **cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    method = create_method({"name": "clip_adapter", **cfg}, backbone, CLASSES)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in (method.down, method.up):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)
    return method


@pytest.mark.parametrize("ratio", [0.2, 0.6, 1.0])
def test_logits_equal_the_official_formula_on_unnormalised_features(tiny_backbone: FrozenCLIP, images,
                                                                    ratio: float) -> None:
    method = adapter_with_known_weights(tiny_backbone, ratio=ratio)
    w1, w2 = method.down.weight.detach(), method.up.weight.detach()  # (D/4, D), (D, D/4)
    assert w1.shape == (8, 32) and w2.shape == (32, 8)
    with torch.no_grad():
        f = tiny_backbone.encode_image(images).float()  # (B, D), NOT normalised, as the official code feeds A
        assert not torch.allclose(f.norm(dim=-1), torch.ones(3))
        a = torch.relu(torch.relu(f @ w1.T) @ w2.T)  # (B, D)
        assert a.abs().sum() > 0  # the adapter branch contributes
        blended = F.normalize(ratio * a + (1 - ratio) * f, dim=-1)  # (B, D)
        text = F.normalize(tiny_backbone.encode_text([f"a photo of a {n}." for n in CLASSES.names]).float(), dim=-1)
        expected = tiny_backbone.model.logit_scale.exp() * blended @ text.T  # (B, C)
        out = method(images, CLASSES)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.image_features, blended, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.text_features, text, atol=1e-6, rtol=1e-5)


def test_cached_frozen_features_give_the_same_logits(tiny_backbone: FrozenCLIP, images) -> None:
    """The engine's feature caches hold ``encode_images`` (frozen, normalised) and call ``forward_features``."""
    method = adapter_with_known_weights(tiny_backbone)
    with torch.no_grad():
        cached = method.encode_images(images)  # (B, D)
        torch.testing.assert_close(method.forward_features(cached, CLASSES).logits, method(images, CLASSES).logits)


def test_tiny_ratio_approaches_zero_shot(tiny_backbone: FrozenCLIP, images) -> None:
    zeroshot = create_method({"name": "zeroshot"}, tiny_backbone, CLASSES)
    with torch.no_grad():
        reference = zeroshot(images, CLASSES).logits
        near = adapter_with_known_weights(tiny_backbone, ratio=1e-6)(images, CLASSES).logits
        far = adapter_with_known_weights(tiny_backbone, ratio=0.5)(images, CLASSES).logits
    torch.testing.assert_close(near, reference, atol=1e-4, rtol=1e-4)
    assert (far - reference).abs().max() > 1e-2


def test_gradients_reach_both_adapter_weights_only(tiny_backbone: FrozenCLIP, images) -> None:
    method = adapter_with_known_weights(tiny_backbone)
    assert {n for n, _ in method.named_parameters()} == {"down.weight", "up.weight"}
    out = method(images, CLASSES)
    sum(method.loss(out, LABELS).values()).backward()
    assert set(method.loss(out, LABELS)) == {"ce"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert all(p.grad is None for p in tiny_backbone.parameters())
    assert not out.text_features.requires_grad


def test_class_features_are_encoded_once_per_class_set(tiny_backbone: FrozenCLIP, images, monkeypatch) -> None:
    classes = ClassSet(CLASSES.names, "an adapter test photo of a {}.")  # a template no other test has cached
    calls = []
    encode_text = tiny_backbone.encode_text

    def counting(texts):
        calls.append(len(texts))
        return encode_text(texts)

    monkeypatch.setattr(tiny_backbone, "encode_text", counting)
    method = adapter_with_known_weights(tiny_backbone)
    first = method(images, classes)
    assert calls == [len(classes)]
    for _ in range(3):
        out = method(images, classes)
        sum(method.loss(out, LABELS).values()).backward()
    assert calls == [len(classes)]
    torch.testing.assert_close(out.text_features, first.text_features)


def test_ratio_rule() -> None:
    rule = CLIPAdapterConfig.RULES["ratio"]
    assert rule(0.2) and rule(1.0) and rule(1e-6)
    assert not rule(0.0) and not rule(-0.2) and not rule(1.5)


def test_trainable_parameter_count_on_vit_b16(vit_b16: FrozenCLIP) -> None:
    method = create_method({"name": "clip_adapter"}, vit_b16, CLASSES)
    assert vit_b16.embed_dim == 512
    assert sum(p.numel() for p in method.parameters() if p.requires_grad) == 2 * 512 * 128 == 131_072
