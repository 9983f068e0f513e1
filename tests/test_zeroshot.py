"""Zero-shot CLIP against an independent computation with open_clip's encode_text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method
from prompt_learning.prompts.templates import IMAGENET_TEMPLATES_SELECT, resolve_templates

from .conftest import CLASSES


def reference(backbone, templates, images):
    model = backbone.model
    feats = []
    for t in templates:
        ids = backbone.tokenizer([t.format(c) for c in CLASSES.names])
        feats.append(F.normalize(model.encode_text(ids), dim=-1))
    text = F.normalize(torch.stack(feats).mean(0), dim=-1)
    image = F.normalize(model.encode_image(images), dim=-1)
    return model.logit_scale.exp() * image @ text.T


def test_dataset_template(tiny_backbone, images) -> None:
    method = create_method({"name": "zeroshot"}, tiny_backbone, CLASSES)
    torch.testing.assert_close(method(images, CLASSES).logits, reference(tiny_backbone, [CLASSES.template], images))


def test_ensemble_with_dataset_template(tiny_backbone, images) -> None:
    method = create_method({"name": "zeroshot", "templates": ["ensemble", "{} texture."]}, tiny_backbone, CLASSES)
    expected = reference(tiny_backbone, [*IMAGENET_TEMPLATES_SELECT, "{} texture."], images)
    torch.testing.assert_close(method(images, CLASSES).logits, expected, atol=1e-4, rtol=1e-5)


def test_templates_resolve_and_validate() -> None:
    assert resolve_templates(["dataset"], "{} texture.") == ("{} texture.",)
    assert len(resolve_templates(["ensemble", "dataset"], "a photo of a {}.")) == 8
    with pytest.raises(ConfigurationError, match="exactly one"):
        resolve_templates(["a photo"], "{}")


def test_no_parameters_and_not_trainable(tiny_backbone) -> None:
    method = create_method({"name": "zeroshot"}, tiny_backbone, CLASSES)
    assert not method.trainable and list(method.parameters()) == []
