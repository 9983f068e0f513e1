"""KgCoOp: the knowledge-guidance term against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method
from prompt_learning.prompts import ClassSet

from ..conftest import CLASSES


@pytest.mark.parametrize("distance", ["cosine", "squared_l2"])
def test_loss_term_equals_independent_computation(tiny_backbone: FrozenCLIP, images, distance: str) -> None:
    classes = ClassSet(CLASSES.names, "a photo of a {}, a type of shape.")
    torch.manual_seed(0)
    method = create_method({"name": "kgcoop", "distance": distance}, tiny_backbone, classes)
    with torch.no_grad():
        method.context.ctx.add_(0.1 * torch.randn_like(method.context.ctx))
    out = method(images, classes)
    losses = method.loss(out, torch.tensor([0, 1, 2]))
    learned = F.normalize(method.encode_classes(classes), dim=-1)
    clip = F.normalize(tiny_backbone.encode_text([f"a photo of a {n}, a type of shape." for n in classes.names]), dim=-1)
    if distance == "cosine":  # official code: W * (1 - mean cos)
        expected = 8.0 * (1 - torch.stack([torch.dot(a, b) for a, b in zip(learned, clip, strict=True)]).mean())
    else:  # paper: lambda * mean ||w - w_clip||^2
        expected = 8.0 * torch.stack([((a - b) ** 2).sum() for a, b in zip(learned, clip, strict=True)]).mean()
    torch.testing.assert_close(losses["kg"], expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(out.logits, torch.tensor([0, 1, 2])))
    assert losses["kg"] > 0
    assert set(losses) == {"ce", "kg"}


def test_cosine_distance_is_half_the_squared_distance(tiny_backbone: FrozenCLIP, images) -> None:
    torch.manual_seed(0)
    cos = create_method({"name": "kgcoop", "ctx_init": ""}, tiny_backbone, CLASSES)
    torch.manual_seed(0)
    l2 = create_method({"name": "kgcoop", "ctx_init": "", "distance": "squared_l2"}, tiny_backbone, CLASSES)
    labels = torch.tensor([0, 1, 2])
    torch.testing.assert_close(2 * cos.loss(cos(images, CLASSES), labels)["kg"],
                               l2.loss(l2(images, CLASSES), labels)["kg"], atol=1e-6, rtol=1e-5)
