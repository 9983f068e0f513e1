"""CoCoOp: image-conditioned context, (B, C, D) class features, memory that does not grow with B."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.methods import create_method

from ..conftest import CLASSES


def manual_class_features(backbone: FrozenCLIP, method, image_feature: torch.Tensor) -> torch.Tensor:
    """Eq. (4) written out for one image: ctx + pi(x) in place of the embeddings of "a photo of a"."""
    net = method.meta_net
    shift = net.linear2(torch.relu(net.linear1(image_feature)))  # (W,)
    ids = backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names])  # (C, L)
    embeds = backbone.token_embeddings(ids).clone()
    embeds[:, 1:5] = method.context.ctx + shift  # positions of "a photo of a"
    return F.normalize(backbone.encode_text_embeddings(embeds, ids.argmax(-1)), dim=-1)  # (C, D)


def test_class_features_follow_each_image(tiny_backbone: FrozenCLIP, images) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "cocoop", "images_per_chunk": 2}, tiny_backbone, CLASSES)
    image_features = method.encode_images(images)  # (3, D)
    features = method.encode_classes(CLASSES, image_features)
    assert features.shape == (3, len(CLASSES), tiny_backbone.embed_dim)
    for b in range(3):
        torch.testing.assert_close(features[b], manual_class_features(tiny_backbone, method, image_features[b]),
                                   atol=1e-5, rtol=1e-5)
    logits = method(images, CLASSES).logits
    expected = tiny_backbone.logit_scale * torch.einsum("bd,bcd->bc", image_features, features)
    torch.testing.assert_close(logits, expected)


def _saved_bytes(method, images) -> tuple[int, dict[str, torch.Tensor]]:
    """Bytes autograd keeps for backward during one forward, and the resulting gradients."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    method.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = method(images, CLASSES)
    F.cross_entropy(out.logits, torch.arange(images.shape[0]) % len(CLASSES)).backward()
    return total, {n: p.grad.clone() for n, p in method.named_parameters()}


def test_training_memory_does_not_grow_with_batch_size(tiny_backbone: FrozenCLIP) -> None:
    torch.manual_seed(0)
    method = create_method({"name": "cocoop", "images_per_chunk": 1}, tiny_backbone, CLASSES)
    batch = lambda b: torch.randn(b, 3, tiny_backbone.image_size, tiny_backbone.image_size,  # noqa: E731
                                  generator=torch.Generator().manual_seed(b))
    eight, grads = _saved_bytes(method, batch(8))
    sixteen, _ = _saved_bytes(method, batch(16))
    method.cfg.activation_checkpointing = False
    eight_plain, plain_grads = _saved_bytes(method, batch(8))
    one_plain, _ = _saved_bytes(method, batch(1))
    assert eight_plain > 6 * one_plain  # without checkpointing: activations of all B*C prompts
    assert sixteen < one_plain  # with it: less than a single image's prompts without it
    per_extra_image = (sixteen - eight) / 8  # what grows with B: the (C, D) features and (W,) shift per image
    assert per_extra_image < one_plain / 20, (eight, sixteen, one_plain, eight_plain)
    for name, grad in grads.items():  # and the gradients are the same
        torch.testing.assert_close(grad, plain_grads[name], atol=1e-6, rtol=1e-5)


def test_batch_is_encoded_in_one_call_within_the_prompt_budget(tiny_backbone: FrozenCLIP, images, monkeypatch) -> None:
    """Default: the B*C prompts go through the text tower together (each image's prefix once); over
    the budget, chunks of images give the same features and gradients."""
    torch.manual_seed(0)
    method = create_method({"name": "cocoop"}, tiny_backbone, CLASSES)
    assert method.images_per_chunk(len(CLASSES)) == 4096 // len(CLASSES)
    calls = []
    encode = tiny_backbone.encode_text_embeddings
    monkeypatch.setattr(tiny_backbone, "encode_text_embeddings",
                        lambda e, eot, *a, **k: calls.append((e.shape[0], k.get("groups"))) or encode(e, eot, *a, **k))
    one_call, one_grads = _saved_bytes(method, images)
    assert calls == [(3 * len(CLASSES), 3)]  # one call, one shared prefix per image
    calls.clear()
    method.cfg.max_chunk_prompts = 2 * len(CLASSES)  # two images per chunk: chunks of 2 + 1
    chunked, chunk_grads = _saved_bytes(method, images)
    chunks = [(2 * len(CLASSES), 2), (len(CLASSES), 1)]
    assert sorted(calls) == sorted(chunks * 2)  # forward, then recomputation in backward
    for name, grad in one_grads.items():
        torch.testing.assert_close(chunk_grads[name], grad, atol=1e-6, rtol=1e-5)
