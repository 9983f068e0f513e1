"""RPO against independent computations: the official masks built by loops, the full-sequence masked passes through
open_clip's own blocks, the zero-shot CLS / EOT features bit for bit, the logits as a loop over the K pairs, the
initialisation, which tensors learn, the context-length error, the refused towers and the export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prompt_learning.backbone import FrozenCLIP, read_only
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.rpo import RPO

from ..conftest import CLASSES, UNSEEN

K = 5


def rpo(backbone, seed: int = 0, **cfg) -> RPO:
    torch.manual_seed(seed)
    method = create_method({"name": "rpo", "n_prompts": K, **cfg}, backbone, CLASSES)
    with torch.no_grad():  # away from the init, so that every prompt token differs
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return method


def loop_text_masks(eot: torch.Tensor, length: int, heads: int) -> torch.Tensor:
    """The official define_mask, one sequence at a time: causal, then -inf on key columns e_c + 1 onwards."""
    masks = []
    for e in eot.tolist():
        mask = torch.full((length, length), float("-inf")).triu(1)
        mask[:, e + 1 :] = float("-inf")
        masks.append(mask.repeat(heads, 1, 1))
    return torch.cat(masks)  # (N * heads, L, L)


def reference_text(backbone: FrozenCLIP, prompts: torch.Tensor, names) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-context sequences with the prompts written into slots e_c+1..e_c+K (no positional embedding), open_clip's
    blocks with the loop-built masks -> EOT features (C, D) and prompt features (C, K, D)."""
    text = backbone.text
    ids = backbone.tokenize([f"a photo of a {n}." for n in names])
    eot = ids.argmax(-1)
    x = backbone.token_embeddings(ids) + text.positional_embedding
    x = x.clone()
    for c, e in enumerate(eot.tolist()):
        for k in range(prompts.shape[0]):
            x[c, e + 1 + k] = prompts[k]
    mask = loop_text_masks(eot, ids.shape[1], text.transformer.resblocks[0].attn.num_heads)
    for block in text.transformer.resblocks:
        x = block(x, attn_mask=mask)
    x = text.ln_final(x)
    eot_features = torch.stack([x[c, e] for c, e in enumerate(eot.tolist())]) @ text.projection
    prompt_features = torch.stack([x[c, e + 1 : e + 1 + prompts.shape[0]] for c, e in enumerate(eot.tolist())])
    return eot_features, prompt_features @ text.projection


def reference_image(backbone: FrozenCLIP, prompts: torch.Tensor, images: torch.Tensor):
    """[CLS, patches] + positions, the prompts appended (ln_pre, no position), a (T+K)^2 mask with -inf on the last
    K key columns, open_clip's blocks -> CLS features (B, D) and prompt features (B, K, D)."""
    visual = backbone.model.visual
    x = visual._embeds(images)
    t, k = x.shape[1], prompts.shape[0]
    x = torch.cat([x, visual.ln_pre(prompts).expand(x.shape[0], -1, -1)], dim=1)
    mask = torch.zeros(t + k, t + k)
    for column in range(t, t + k):
        mask[:, column] = float("-inf")
    for block in visual.transformer.resblocks:
        x = block(x, attn_mask=mask)
    return visual.ln_post(x[:, 0]) @ visual.proj, visual.ln_post(x[:, t:]) @ visual.proj


def test_official_masks_equal_the_loop_built_ones(tiny_backbone) -> None:
    eot = torch.tensor([3, 7, 5])
    assert torch.equal(read_only.official_text_mask(eot, 12, 2), loop_text_masks(eot, 12, 2))
    vision = read_only.official_vision_mask(9, 3)
    assert vision.shape == (12, 12) and torch.isinf(vision[:, 9:]).all() and (vision[:, :9] == 0).all()


def test_prompt_features_equal_the_masked_full_sequence_reference(tiny_backbone, images) -> None:
    method = rpo(tiny_backbone)
    names = CLASSES.names
    with torch.no_grad():
        ref_eot, ref_t = reference_text(tiny_backbone, method.text_prompt, names)  # (C, D), (C, K, D)
        ref_cls, ref_v = reference_image(tiny_backbone, method.img_prompt, images)  # (B, D), (B, K, D)
        ids = tiny_backbone.tokenize([f"a photo of a {n}." for n in names])
        lib_eot, lib_t = read_only.masked_text(tiny_backbone.text, tiny_backbone.token_embeddings(ids),
                                               ids.argmax(-1), method.text_prompt)
        lib_cls, lib_v = read_only.masked_image(tiny_backbone.vision, images, method.img_prompt)
        cls, v = method.encode_prompted_images(images)
        t = method.encode_classes(CLASSES)  # (K, C, D)
    assert t.shape == (K, len(names), tiny_backbone.embed_dim) and v.shape == (3, K, tiny_backbone.embed_dim)
    torch.testing.assert_close(t, F.normalize(ref_t, dim=-1).transpose(0, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v, F.normalize(ref_v, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, F.normalize(ref_cls, dim=-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(method.zero_shot_class_features(CLASSES), F.normalize(ref_eot, dim=-1),
                               atol=1e-5, rtol=1e-5)
    for ours, ref in ((lib_eot, ref_eot), (lib_t, ref_t), (lib_cls, ref_cls), (lib_v, ref_v)):  # the official form
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lean", [True, False])
def test_cls_and_eot_are_bit_identical_to_the_unprompted_backbone(tiny_backbone, images, lean) -> None:
    method = rpo(tiny_backbone)
    ids = tiny_backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names])
    try:
        tiny_backbone.lean_blocks = lean
        with torch.no_grad():
            plain_image = tiny_backbone.encode_image(images)  # (B, D): open_clip's encode_image
            plain_text = tiny_backbone.encode_text_embeddings(tiny_backbone.token_embeddings(ids), ids.argmax(-1))
        out = method(images, CLASSES)  # prompts present, with gradients
        states = method.class_states(CLASSES)
        assert torch.equal(read_only.image_states(tiny_backbone.vision, images).pooled, plain_image)
        assert torch.equal(out.image_features, F.normalize(plain_image.float(), dim=-1))
        assert torch.equal(states.pooled, plain_text)
        with torch.no_grad():
            method.text_prompt.mul_(-2.0)
            method.img_prompt.mul_(-2.0)
        again = method(images, CLASSES)
        assert torch.equal(again.image_features, out.image_features)
        assert torch.equal(method.class_states(CLASSES).pooled, plain_text)
        assert not torch.allclose(again.logits, out.logits)
    finally:
        tiny_backbone.lean_blocks = True


def test_logits_are_the_mean_of_the_k_paired_similarities(tiny_backbone, images) -> None:
    method = rpo(tiny_backbone)
    with torch.no_grad():
        out = method(images, CLASSES)
        v, t = out.extras["image_prompts"], out.text_features  # (B, K, D), (K, C, D)
        expected = torch.zeros(images.shape[0], len(CLASSES))
        for k in range(K):
            expected += tiny_backbone.logit_scale * v[:, k] @ t[k].T
        expected /= K
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(3, K))
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(K, len(CLASSES)))


def test_init_is_eot_and_class_embedding_plus_unit_noise_of_norm_0_1(tiny_backbone) -> None:
    torch.manual_seed(5)
    method = create_method({"name": "rpo", "n_prompts": K}, tiny_backbone, CLASSES)
    torch.manual_seed(5)
    text_noise, image_noise = torch.randn(K, tiny_backbone.text_width), torch.randn(K, tiny_backbone.vision_width)
    eot = tiny_backbone.model.token_embedding.weight[49407]
    cls = tiny_backbone.model.visual.class_embedding
    torch.testing.assert_close(method.text_prompt, eot + 0.1 * text_noise / text_noise.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(method.img_prompt, cls + 0.1 * image_noise / image_noise.norm(dim=-1, keepdim=True))
    torch.testing.assert_close((method.text_prompt - eot).norm(dim=-1), torch.full((K,), 0.1))


def test_parameters_on_vit_b16(vit_b16) -> None:
    """K = 24 (the presets, main_K24.yaml): 24 x 512 + 24 x 768 = 30,720; K = 4 (the default, main_K4.yaml): 5,120."""
    count = {k: sum(p.numel() for p in create_method({"name": "rpo", "n_prompts": k}, vit_b16, CLASSES).parameters())
             for k in (24, 4)}
    assert count == {24: 30_720, 4: 5_120}
    assert create_method({"name": "rpo"}, vit_b16, CLASSES).cfg.n_prompts == 4


def test_only_the_two_prompt_tensors_learn(tiny_backbone, images) -> None:
    method = rpo(tiny_backbone)
    assert {n: tuple(p.shape) for n, p in method.named_parameters()} == {
        "text_prompt": (K, tiny_backbone.text_width), "img_prompt": (K, tiny_backbone.vision_width)}
    out = method(images, CLASSES)
    sum(method.loss(out, torch.tensor([0, 1, 2])).values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert all(p.grad is None for p in tiny_backbone.parameters())
    assert not any(s.requires_grad for s in method.class_states(CLASSES).keys)  # the originals' pass is constant


def test_prompts_after_a_too_long_prompt_name_the_class(tiny_backbone, images) -> None:
    long = ClassSet(("red star", "very " * 20 + "long name"))
    method = rpo(tiny_backbone)
    with pytest.raises(ConfigurationError, match="very very.*n_prompts.*context length 32"):
        method(images, long)
    method = rpo(tiny_backbone, n_prompts=30)  # "a photo of a red star." has 9 tokens: 9 + 30 > 32
    with pytest.raises(ConfigurationError, match="'red star'"):
        method.encode_classes(CLASSES)


def test_underscores_read_as_spaces(tiny_backbone) -> None:
    method = rpo(tiny_backbone)
    with torch.no_grad():
        spaced = method.encode_classes(ClassSet(("sea lion", "red star")))
        underscored = method.encode_classes(ClassSet(("sea_lion", "red_star")))
    assert torch.equal(spaced, underscored)


def test_towers_that_cannot_take_read_only_tokens_are_refused(custom_text_backbone, tiny_backbone, monkeypatch) -> None:
    with pytest.raises(ConfigurationError, match="not causal"):
        create_method({"name": "rpo"}, custom_text_backbone, CLASSES)
    monkeypatch.setattr(read_only, "plain_self_attention", lambda block: False)
    with pytest.raises(ConfigurationError, match="standard pre-norm"):
        create_method({"name": "rpo"}, tiny_backbone, CLASSES)


def test_export_reload_gives_identical_logits(tiny_backbone, images, tmp_path) -> None:
    method = rpo(tiny_backbone)
    save_export(tmp_path, method, {"epochs": 0})
    reloaded = load_method(tmp_path, tiny_backbone)
    assert set(reloaded.export_tensors()) == {"text_prompt", "img_prompt"}
    for classes in (CLASSES, UNSEEN):
        with torch.no_grad():
            assert torch.equal(method(images, classes).logits, reloaded(images, classes).logits)


class SquareShapes(TorchDispatchMode):
    """Records every tensor an op returns whose last two dimensions are equal (a mask or attention map's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == t.shape[-2] > 1:
                self.shapes.append(tuple(t.shape))
        return out


def test_a_training_step_builds_no_per_class_mask(tiny_backbone) -> None:
    """The official code builds a (C * heads, 77, 77) mask (C * L^2 per head); here the prompts of class c read keys
    through a (C, 1, 1, L) key mask, so no tensor of C * L^2 entries (or an (L, L) per class) exists in a step."""
    classes = ClassSet(tuple(f"class number {i}" for i in range(40)))
    method = rpo(tiny_backbone)
    images = torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    with SquareShapes() as probe:
        out = method(images, classes)
        F.cross_entropy(out.logits, torch.tensor([0, 1])).backward()
    per_class = [s for s in probe.shapes if len(s) > 2 and s[0] >= len(classes)]
    assert per_class == []
    with SquareShapes() as probe:  # what the probe sees of the official form
        read_only.official_text_mask(torch.full((len(classes),), 5), 32, 4)
    assert (len(classes) * 4, 32, 32) in probe.shapes
