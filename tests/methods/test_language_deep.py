"""Deep language prompting: text prompts per layer against a hand-written text-tower forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method

from ..conftest import CLASSES


def manual_text_features(backbone: FrozenCLIP, prompts: dict[int, torch.Tensor]) -> torch.Tensor:
    """CLIP's text forward written out, with positions 1..n overwritten by prompts[i] before block i
    (i >= 1) and prompts[0] in place of the embeddings of "a photo of a"."""
    model = backbone.model
    ids = backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names])  # (C, L)
    n = prompts[0].shape[0]
    x = model.token_embedding(ids).clone()
    x[:, 1 : 1 + n] = prompts[0]
    x = x + model.positional_embedding
    for i, block in enumerate(model.transformer.resblocks):
        if i > 0 and i in prompts:
            x = torch.cat([x[:, :1], prompts[i].expand(x.shape[0], -1, -1), x[:, 1 + n :]], dim=1)
        x = block(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    return F.normalize(x[torch.arange(len(ids)), ids.argmax(-1)] @ model.text_projection, dim=-1)


def test_text_features_equal_a_hand_written_forward(tiny_backbone: FrozenCLIP) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "language_deep", "depth_text": 2}, tiny_backbone, CLASSES)
    with torch.no_grad():
        method.context.ctx.add_(0.1 * torch.randn_like(method.context.ctx))
    prompts = method.text_layer_prompts()
    assert sorted(prompts) == [0, 1] and prompts[1].shape == (4, tiny_backbone.text_width)
    torch.testing.assert_close(method.encode_classes(CLASSES), manual_text_features(tiny_backbone, prompts),
                               atol=1e-5, rtol=1e-5)


def test_image_features_stay_frozen(tiny_backbone: FrozenCLIP, images) -> None:
    method = create_method({"name": "language_deep"}, tiny_backbone, CLASSES)
    assert not method.touches_image_tower and not method.cfg.n_ctx_vision
    frozen = F.normalize(tiny_backbone.model.encode_image(images), dim=-1)
    torch.testing.assert_close(method.encode_images(images), frozen)
    text_only_ivlp = create_method({"name": "ivlp", "n_ctx_vision": 0, "depth_vision": 0}, tiny_backbone, CLASSES)
    assert not text_only_ivlp.touches_image_tower


def test_vision_settings_point_to_ivlp(tiny_backbone: FrozenCLIP) -> None:
    with pytest.raises(ConfigurationError, match="method=ivlp"):
        create_method({"name": "language_deep", "n_ctx_vision": 2}, tiny_backbone, CLASSES)
