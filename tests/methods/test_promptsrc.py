"""PromptSRC: self-consistency losses against independent computations, and Gaussian prompt aggregation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method
from prompt_learning.prompts.aggregation import gaussian_epoch_weights

from ..conftest import CLASSES


def test_gpa_weights_are_the_normalised_gaussian() -> None:
    w = gaussian_epoch_weights(20, mean=15, std=1)
    assert abs(float(w.sum()) - 1) < 1e-12
    table = {12: 0.004, 13: 0.054, 14: 0.242, 15: 0.399, 16: 0.242, 17: 0.054, 18: 0.004}  # docs/methods/promptsrc.md
    for epoch, value in table.items():
        assert round(float(w[epoch - 1]), 3) == value
    assert float(w[:11].sum() + w[18:].sum()) < 1e-3  # e11 and e19 hold 1.3e-4 each
    flat = gaussian_epoch_weights(20, mean=6, std=10)  # cross-dataset: nearly flat
    assert round(float(flat[0]), 3) == 0.055 and round(float(flat[5]), 3) == 0.063 and round(float(flat[19]), 3) == 0.024
    peaked = gaussian_epoch_weights(50, mean=45, std=5)
    assert int(peaked.argmax()) == 44 and round(float(peaked.max()), 3) == 0.092


def test_aggregation_averages_prompts_only(tiny_backbone: FrozenCLIP) -> None:
    method = create_method({"name": "promptsrc"}, tiny_backbone, CLASSES)
    backbone_before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    epochs, weights = 5, gaussian_epoch_weights(5, mean=3, std=1)
    method.gpa.mean, method.gpa.std = 3, 1
    expected = {n: torch.zeros_like(p) for n, p in method.named_parameters()}
    for epoch in range(epochs):  # the prompts after each epoch: a known value per epoch
        with torch.no_grad():
            for p in method.parameters():
                p.copy_(torch.full_like(p, float(epoch + 1)) + torch.randn_like(p))
        for n, p in method.named_parameters():
            expected[n] += weights[epoch].float() * p.detach()
        method.on_train_epoch_end(epoch, epochs)
    for n, p in method.named_parameters():
        torch.testing.assert_close(p.detach(), expected[n])
    for k, v in tiny_backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k])
    assert set(method.export_tensors()) == {n for n, _ in method.named_parameters()}  # sums are not exported
    assert all(k.startswith("gpa.") for k in set(method.state_dict()) - set(method.export_tensors()))


def test_losses_equal_independent_computations(tiny_backbone: FrozenCLIP, images) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "promptsrc", "templates": ["a photo of a {}.", "art of the {}."]},
                           tiny_backbone, CLASSES)
    with torch.no_grad():
        for p in method.parameters():
            p.add_(0.05 * torch.randn_like(p))
    labels = torch.tensor([0, 1, 2])
    out = method(images, CLASSES)
    losses = method.loss(out, labels)
    # frozen references from the one backbone: raw features averaged over templates, then normalised
    raw = [tiny_backbone.encode_text([t.format(n) for n in CLASSES.names]) for t in ("a photo of a {}.", "art of the {}.")]
    text_frozen = F.normalize((raw[0] + raw[1]) / 2, dim=-1)
    image_frozen = F.normalize(tiny_backbone.model.encode_image(images), dim=-1)
    text = method.encode_classes(CLASSES)
    image = method.encode_images(images)
    torch.testing.assert_close(losses["scl_text"], 25 * (text - text_frozen).abs().mean(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(losses["scl_image"], 10 * (image - image_frozen).abs().mean(), atol=1e-6, rtol=1e-5)
    p = F.softmax(out.logits, -1)
    p0 = F.softmax(tiny_backbone.logit_scale * image_frozen @ text_frozen.T, -1)
    kl = (p0 * (p0.log() - p.log())).sum() / p.numel()  # summed, divided by B * C
    torch.testing.assert_close(losses["scl_logits"], kl, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(losses["ce"], F.cross_entropy(out.logits, labels))
    assert set(losses) == {"ce", "scl_text", "scl_image", "scl_logits"}
