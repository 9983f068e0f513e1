"""IVLP (and deep language prompting): phrase initialisation with frozen remainder, the deep-prompt
depth convention, and the vision branch against a hand-written ViT forward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method

from ..conftest import CLASSES


def manual_vision_features(backbone: FrozenCLIP, images: torch.Tensor, prompts: dict[int, torch.Tensor]) -> torch.Tensor:
    """ViT forward written out: patches + CLS + positions, prompts appended, ln_pre, blocks that
    overwrite the last n tokens with prompts[i] for i >= 1, ln_post on CLS, projection."""
    v = backbone.model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)  # (B, P, W)
    cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding  # (B, 1+P, W)
    n = prompts[0].shape[0]
    x = v.ln_pre(torch.cat([x, prompts[0].expand(x.shape[0], -1, -1)], dim=1))  # (B, 1+P+n, W)
    for i, block in enumerate(v.transformer.resblocks):
        if i > 0 and i in prompts:
            x = torch.cat([x[:, :-n], prompts[i].expand(x.shape[0], -1, -1)], dim=1)
        x = block(x)
    return F.normalize(v.ln_post(x[:, 0]) @ v.proj, dim=-1)


def test_two_learnable_tokens_keep_the_rest_of_the_phrase_frozen(tiny_backbone: FrozenCLIP) -> None:
    method = create_method({"name": "ivlp", "n_ctx_text": 2, "depth_text": 1, "n_ctx_vision": 0}, tiny_backbone, CLASSES)
    phrase = tiny_backbone.token_embeddings(tiny_backbone.tokenize(["a photo of a"]))[0, 1:3]
    assert torch.equal(method.context.ctx, phrase)  # learnable "a photo"
    # shallow + at init: "[SOT] a photo | of a <name> . [EOT]" is exactly the hand-written prompt
    expected = F.normalize(tiny_backbone.encode_text([f"a photo of a {n}." for n in CLASSES.names]), dim=-1)
    torch.testing.assert_close(method.encode_classes(CLASSES), expected, atol=1e-5, rtol=1e-5)


def test_more_tokens_than_phrase_means_random_init(tiny_backbone: FrozenCLIP) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "ivlp", "n_ctx_text": 6}, tiny_backbone, CLASSES)
    assert method.class_prompts.frozen_ids is None
    assert 0.01 < method.context.ctx.std() < 0.03


def test_text_deep_prompts_enter_before_blocks_one_to_depth_minus_one(tiny_backbone: FrozenCLIP) -> None:
    method = create_method({"name": "ivlp", "depth_text": 2, "depth_vision": 1}, tiny_backbone, CLASSES)
    assert method.text_deep.layers == [1] and method.vision_prompts.layers == [0]
    before = method.encode_classes(CLASSES)
    with torch.no_grad():
        method.text_deep.prompts["layer_1"].add_(1.0)
    assert not torch.allclose(method.encode_classes(CLASSES), before)


def test_vision_branch_equals_a_hand_written_forward(tiny_backbone: FrozenCLIP, images) -> None:
    torch.manual_seed(1)
    method = create_method({"name": "ivlp", "n_ctx_vision": 3, "depth_vision": 2}, tiny_backbone, CLASSES)
    prompts = method.vision_prompts()
    assert sorted(prompts) == [0, 1] and prompts[0].shape == (3, tiny_backbone.vision_width)
    torch.testing.assert_close(method.encode_images(images), manual_vision_features(tiny_backbone, images, prompts),
                               atol=1e-5, rtol=1e-5)
