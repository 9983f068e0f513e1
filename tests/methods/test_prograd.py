"""ProGrad: right-aligned template init and the gradient projection rule, against autograd."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method
from prompt_learning.prompts import ClassSet

from ..conftest import CLASSES


def test_template_words_fill_the_last_context_slots(tiny_backbone: FrozenCLIP) -> None:
    classes = ClassSet(CLASSES.names, "a photo of a {}, a type of shape.")
    method = create_method({"name": "prograd"}, tiny_backbone, classes)
    phrase = tiny_backbone.token_embeddings(tiny_backbone.tokenize(["a photo of a"]))[0, 1:5]
    ctx = method.context.ctx
    assert ctx.shape[0] == 16 and torch.equal(ctx[:12], torch.zeros_like(ctx[:12]))
    assert torch.equal(ctx[12:], phrase)


def expected_gradient(method, backbone: FrozenCLIP, images, labels, lam: float) -> torch.Tensor:
    """g_d and g_g from autograd on a fresh forward, then the rule of Eq. (5)."""
    ctx = method.context.ctx
    out = method(images, CLASSES)
    (g_d,) = torch.autograd.grad(F.cross_entropy(out.logits, labels), ctx, retain_graph=True)
    teacher_text = F.normalize(backbone.encode_text([f"a photo of a {n}." for n in CLASSES.names]), dim=-1)
    teacher = backbone.logit_scale * out.image_features @ teacher_text.T
    kl = -(F.softmax(teacher, -1) * F.log_softmax(out.logits, -1)).sum(-1).mean()
    (g_g,) = torch.autograd.grad(kl, ctx)
    dot = (g_d * g_g).sum()
    if dot >= 0:
        return g_d, False
    return g_d - lam * dot / g_g.norm() ** 2 * g_g, True


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_after_backward_projects_exactly_as_the_rule(tiny_backbone: FrozenCLIP, images, lam: float) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "prograd", "lambda_": lam}, tiny_backbone, CLASSES)
    with torch.no_grad():
        method.context.ctx.add_(0.05 * torch.randn_like(method.context.ctx))
    seen = set()
    for labels in itertools.product(range(len(CLASSES)), repeat=3):
        labels = torch.tensor(labels)
        expected, projected = expected_gradient(method, tiny_backbone, images, labels, lam)
        if projected in seen:
            continue
        seen.add(projected)
        method.zero_grad()
        out = method(images, CLASSES)
        losses = method.loss(out, labels)
        assert set(losses) == {"ce"} and "kl" in method.logged_metrics()  # the KL gradient is never applied
        sum(losses.values()).backward()
        method.after_backward()
        torch.testing.assert_close(method.context.ctx.grad, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)
        if projected:  # the projected gradient no longer opposes the zero-shot direction (lambda = 1)
            if lam == 1.0:
                out = method(images, CLASSES)
                (g_g,) = torch.autograd.grad(method.kl_loss(out), method.context.ctx)
                assert abs(float((method.context.ctx.grad * g_g).sum())) < 1e-6 * float(g_g.norm() * expected.norm())
        if seen == {True, False}:
            break
    assert seen == {True, False}  # both branches of the rule were exercised


def test_teacher_is_the_one_frozen_backbone(tiny_backbone: FrozenCLIP) -> None:
    method = create_method({"name": "prograd"}, tiny_backbone, CLASSES)
    assert [n for n, _ in method.named_parameters()] == ["context.ctx"]
    assert all(not isinstance(m, FrozenCLIP) for m in method.modules())
    assert method.backbone is tiny_backbone
