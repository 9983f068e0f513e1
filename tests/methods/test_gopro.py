"""GOPro: read-only block outputs, the style/content shift, three views of the raw image, the four loss terms,
BatchNorm train/eval, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from prompt_learning import FrozenCLIP
from prompt_learning.data.image_dataset import ImageDataset
from prompt_learning.data.types import Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.gopro import GOProViews, moco_view, simclr_loss

from ..conftest import CLASSES, UNSEEN


def gopro(backbone: FrozenCLIP, **cfg):
    torch.manual_seed(0)
    method = create_method({"name": "gopro", **cfg}, backbone, CLASSES)
    with torch.no_grad():  # away from the zero-bias init, so that every term is exercised
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return method


def three_views(backbone: FrozenCLIP, batch: int = 3, seed: int = 2) -> torch.Tensor:
    size = backbone.image_size
    return torch.randn(batch, 3, 3, size, size, generator=torch.Generator().manual_seed(seed))  # (B, V, 3, H, W)


def picture(size: int = 48, seed: int = 0) -> Image.Image:
    pixels = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


# -- the backbone's read-only pass -------------------------------------------------------------------------------
@pytest.mark.parametrize("lean", [True, False])
def test_hidden_states_are_open_clips_block_outputs_from_the_same_pass(tiny_backbone: FrozenCLIP, images, lean) -> None:
    tiny_backbone.lean_blocks = lean
    try:
        feature, states = tiny_backbone.encode_image_with_hidden_states(images)
    finally:
        tiny_backbone.lean_blocks = True
    visual = tiny_backbone.model.visual
    with torch.no_grad():
        x = visual._embeds(images)
        expected = []
        for block in visual.transformer.resblocks:  # open_clip's own blocks, called one by one
            x = block(x)
            expected.append(x)
    assert len(states) == tiny_backbone.vision_depth == len(expected)
    for got, want in zip(states, expected, strict=True):
        assert got.shape == (3, want.shape[1], tiny_backbone.vision_width)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feature, tiny_backbone.encode_image(images), atol=1e-5, rtol=1e-5)
    _, means = tiny_backbone.encode_image_with_hidden_states(images, lambda h: h.mean(1))  # a reduction per block
    torch.testing.assert_close(torch.stack(means), torch.stack([s.mean(1) for s in states]))


# -- Eq.: statistics, projectors, mixer -> shift -> conditioned class features ---------------------------------------
def loop_shift(method, states: list[torch.Tensor], b: int) -> torch.Tensor:
    """v for image ``b``, written out per layer and per token."""
    terms = []
    for layer, h in enumerate(states):
        tokens = h[b].double()  # (L, W_v)
        mu = sum(tokens[t] for t in range(tokens.shape[0])) / tokens.shape[0]
        sq = sum((tokens[t] - mu) ** 2 for t in range(tokens.shape[0]))
        sigma = torch.sqrt((sq + 2.3e-8) / tokens.shape[0])
        style, content = method.shift.style[layer], method.shift.content[layer]
        s = style.weight.double() @ ((mu + sigma) / 2) + style.bias.double()
        c = content.weight.double() @ mu + content.bias.double()
        terms.append((s + c) / 2)
    rho = method.shift.mixer
    return sum(rho.weight[0, layer].double() * m for layer, m in enumerate(terms)) + rho.bias.double()  # (W_t,)


def manual_class_features(backbone: FrozenCLIP, method, shift: torch.Tensor) -> torch.Tensor:
    ids = backbone.tokenize([f"a photo of a {n}." for n in CLASSES.names])  # (C, L)
    embeds = backbone.token_embeddings(ids).clone()
    embeds[:, 1:5] = method.context.ctx + shift  # the positions of "a photo of a"
    return F.normalize(backbone.encode_text_embeddings(embeds, ids.argmax(-1)), dim=-1)  # (C, D)


def test_shift_and_class_features_follow_the_per_layer_formulas(tiny_backbone: FrozenCLIP, images) -> None:
    method = gopro(tiny_backbone, images_per_chunk=2).eval()
    feature, states = tiny_backbone.encode_image_with_hidden_states(images)
    out = method(images, CLASSES)
    assert out.text_features.shape == (3, len(CLASSES), tiny_backbone.embed_dim)
    for b in range(3):
        shift = loop_shift(method, states, b).float()
        torch.testing.assert_close(manual_class_features(tiny_backbone, method, shift), out.text_features[b],
                                   atol=1e-5, rtol=1e-5)
    image_features = F.normalize(feature, dim=-1)
    expected = tiny_backbone.logit_scale * torch.einsum("bd,bcd->bc", image_features, out.text_features)
    torch.testing.assert_close(out.logits, expected)
    assert method(images, UNSEEN).logits.shape == (3, len(UNSEEN))


def test_parameter_count_follows_the_backbone_widths(tiny_backbone: FrozenCLIP) -> None:
    method = gopro(tiny_backbone)
    m, w_t, w_v = 4, tiny_backbone.text_width, tiny_backbone.vision_width
    j, d = tiny_backbone.vision_depth, tiny_backbone.embed_dim
    expected = m * w_t + 2 * j * (w_v * w_t + w_t) + (j + 1) + (d * d + d) + 2 * d
    assert sum(p.numel() for p in method.parameters()) == expected
    assert not any("meta_net" in n for n, _ in method.named_parameters())  # the official unused meta-net: left out


# -- views ------------------------------------------------------------------------------------------------------
def test_three_views_are_made_from_the_decoded_image_and_normalised_once(tiny_backbone: FrozenCLIP) -> None:
    cfg = tiny_backbone.preprocess_cfg
    default = tiny_backbone.train_transform()
    views = GOProViews(default, cfg)
    image = picture()
    torch.manual_seed(5)
    stack = views(image)
    size = tiny_backbone.image_size
    assert stack.shape == (3, 3, size, size)
    assert not torch.equal(stack[0], stack[1]) and not torch.equal(stack[0], stack[2])
    assert not torch.equal(stack[1], stack[2])
    # the same draws, replayed: x is the run's augmentation, x_m the MoCo pipeline's [0, 1] picture normalised once
    moco = moco_view(cfg)
    normalize = moco.transforms[-1]
    assert isinstance(normalize, T.Normalize) and list(normalize.mean) == list(cfg["mean"])
    torch.manual_seed(5)
    torch.testing.assert_close(stack[0], default(image))
    raw = T.Compose(moco.transforms[:-1])(image)  # ToTensor output of the decoded image
    assert raw.min() >= 0 and raw.max() <= 1
    torch.testing.assert_close(stack[1], normalize(raw))
    # the AugMix view is a convex mix of normalised pictures: de-normalised, it is again a picture in [0, 1]
    mean, std = torch.tensor(cfg["mean"])[:, None, None], torch.tensor(cfg["std"])[:, None, None]
    pixels = stack[2] * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_training_batches_collate_to_three_views_per_image(tiny_backbone: FrozenCLIP) -> None:
    method = gopro(tiny_backbone)
    transform = method.augmentation(tiny_backbone.train_transform(), CLASSES)
    items = [Datum(f"img{i}", i % len(CLASSES), CLASSES.names[i % len(CLASSES)]) for i in range(4)]
    dataset = ImageDataset(items, lambda ref: picture(seed=int(ref[3:])), transform)
    images, labels = next(iter(DataLoader(dataset, batch_size=4)))
    size = tiny_backbone.image_size
    assert images.shape == (4, 3, 3, size, size)  # (B, V, 3, H, W): what training_step hands to the method
    out = method(images, CLASSES)
    assert out.logits.shape == (4, len(CLASSES))
    assert set(method.loss(out, labels)) == {"ce", "consistency_moco", "consistency_augmix", "simclr"}


# -- the loss ---------------------------------------------------------------------------------------------------
def loop_simclr(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """Pair by pair: -log of the positive's share among the positive and every other sample of both views."""
    a, b = F.normalize(a.double(), dim=-1), F.normalize(b.double(), dim=-1)
    n, losses = a.shape[0], []
    for anchor_view, other_view in ((a, b), (b, a)):
        total = 0.0
        for i in range(n):
            positive = math.exp(float(anchor_view[i] @ other_view[i]) / tau)
            negatives = sum(math.exp(float(anchor_view[i] @ other_view[j]) / tau) for j in range(n) if j != i)
            negatives += sum(math.exp(float(anchor_view[i] @ anchor_view[j]) / tau) for j in range(n) if j != i)
            total += -math.log(positive / (positive + negatives))
        losses.append(total / n)
    return sum(losses) / 2


def test_simclr_matches_a_loop_over_pairs() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    assert abs(float(simclr_loss(a, b, 0.1)) - loop_simclr(a, b, 0.1)) < 1e-4
    assert abs(float(simclr_loss(a, b, 0.5)) - loop_simclr(a, b, 0.5)) < 1e-5


def test_loss_terms_follow_independent_formulas(tiny_backbone: FrozenCLIP) -> None:
    method = gopro(tiny_backbone, simclr_weight=0.3, consistency_weight=2.0).train()
    views = three_views(tiny_backbone)
    labels = torch.tensor([0, 3, 1])
    out = method(views, CLASSES)
    losses = method.loss(out, labels)
    with torch.no_grad():  # each view alone, through the eval path
        method.eval()
        per_view = [method(views[:, v], CLASSES) for v in range(3)]
        method.train()
    torch.testing.assert_close(out.logits, per_view[0].logits, atol=1e-5, rtol=1e-5)
    log_p = per_view[0].logits.log_softmax(-1)
    torch.testing.assert_close(losses["ce"], -log_p[torch.arange(3), labels].mean(), atol=1e-5, rtol=1e-5)
    for name, v in (("consistency_moco", 1), ("consistency_augmix", 2)):
        diff = per_view[0].text_features - per_view[v].text_features  # (B, C, D)
        torch.testing.assert_close(losses[name], 2.0 * (diff ** 2).sum() / diff.numel(), atol=1e-6, rtol=1e-4)
    # SimCLR on P f(x), P f(x_m), P = Linear -> BatchNorm1d in training mode, each view on its own batch statistics
    linear, norm = method.sim_projector.linear, method.sim_projector.norm

    def project(features: torch.Tensor) -> torch.Tensor:
        y = features @ linear.weight.T + linear.bias
        return (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + norm.eps) * norm.weight + norm.bias

    a, b = project(per_view[0].image_features), project(per_view[1].image_features)
    assert abs(float(losses["simclr"].detach()) - 0.3 * loop_simclr(a.detach(), b.detach(), 0.1)) < 1e-4


def test_gradients_reach_every_learned_tensor_and_not_the_backbone(tiny_backbone: FrozenCLIP) -> None:
    method = gopro(tiny_backbone).train()
    out = method(three_views(tiny_backbone), CLASSES)
    sum(method.loss(out, torch.tensor([0, 1, 2])).values()).backward()
    grads = {n: p.grad for n, p in method.named_parameters()}
    assert all(g is not None for g in grads.values())
    for name in ("context.ctx", "shift.style.0.weight", "shift.content.1.weight", "shift.mixer.weight",
                 "sim_projector.linear.weight", "sim_projector.norm.weight", "sim_projector.norm.bias"):
        assert grads[name].abs().sum() > 1e-6, name
    assert all(p.grad is None for p in tiny_backbone.parameters())
    # only the SimCLR term trains the projector; only CE and the consistency terms train the prompt generator
    method.zero_grad()
    out = method(three_views(tiny_backbone), CLASSES)
    method.loss(out, torch.tensor([0, 1, 2]))["simclr"].backward()
    assert method.context.ctx.grad is None and method.sim_projector.linear.weight.grad.abs().sum() > 0


def test_single_view_training_step_and_batch_of_one(tiny_backbone: FrozenCLIP, images) -> None:
    method = gopro(tiny_backbone).train()
    losses = method.loss(method(images, CLASSES), torch.tensor([0, 1, 2]))
    assert float(losses["consistency_moco"].detach()) == 0.0 and float(losses["consistency_augmix"].detach()) == 0.0
    with pytest.raises(ConfigurationError, match="at least 2 images"):
        method(three_views(tiny_backbone, batch=1), CLASSES)
    method.eval()
    assert not method(images, CLASSES).extras  # evaluation: the eval view's logits only
    with pytest.raises(ValueError, match="training-mode forward"):
        method.loss(method(images, CLASSES), torch.tensor([0, 1, 2]))


def test_batchnorm_follows_the_methods_train_and_eval_mode(tiny_backbone: FrozenCLIP) -> None:
    method = gopro(tiny_backbone)
    norm = method.sim_projector.norm
    method.train()
    assert norm.training and not tiny_backbone.model.training  # the frozen backbone stays in eval mode
    before = norm.running_mean.clone()
    method(three_views(tiny_backbone), CLASSES)
    assert int(norm.num_batches_tracked) == 2  # one update per view, as the official two calls
    assert not torch.equal(norm.running_mean, before)
    method.eval()
    assert not norm.training
    frozen = (norm.running_mean.clone(), norm.running_var.clone())
    out = method(three_views(tiny_backbone, seed=4), CLASSES)
    assert torch.equal(norm.running_mean, frozen[0]) and torch.equal(norm.running_var, frozen[1])
    y = out.image_features @ method.sim_projector.linear.weight.T + method.sim_projector.linear.bias
    expected = (y - frozen[0]) / torch.sqrt(frozen[1] + norm.eps) * norm.weight + norm.bias  # running statistics
    torch.testing.assert_close(out.extras["projected"][0], expected, atol=1e-5, rtol=1e-5)


def test_export_reload_keeps_the_projector_statistics(tiny_backbone: FrozenCLIP, images, tmp_path) -> None:
    method = gopro(tiny_backbone).train()
    method(three_views(tiny_backbone), CLASSES)  # moves the running statistics
    method.eval()
    exported = method.export_tensors()
    assert "sim_projector.norm.running_mean" in exported and "sim_projector.norm.num_batches_tracked" not in exported
    save_export(tmp_path, method, {"epochs": 1})
    reloaded = load_method(tmp_path, tiny_backbone).eval()
    assert torch.equal(reloaded.sim_projector.norm.running_var, method.sim_projector.norm.running_var)
    assert torch.equal(reloaded(images, UNSEEN).logits, method(images, UNSEEN).logits)


def test_never_trained_or_scored_from_cached_image_features(tiny_backbone: FrozenCLIP, monkeypatch) -> None:
    from prompt_learning.engine import evaluation, stages

    class Data:
        eval_cache_dir = "somewhere"

    monkeypatch.setattr(evaluation, "weights_have_identity", lambda backbone: True)
    coop = create_method({"name": "coop"}, tiny_backbone, CLASSES)
    assert evaluation.scores_from_cached_features(coop, Data(), 1)  # the cache applies to a text-only method
    method = gopro(tiny_backbone)
    assert not evaluation.scores_from_cached_features(method, Data(), 1)
    assert stages.train_views_for(4, method, 1) == 0  # data.feature_cache.train_views: trained on images
    with pytest.raises(ValueError, match="forward"):
        method.forward_features(torch.zeros(2, tiny_backbone.embed_dim), CLASSES)


def test_a_resnet_image_tower_is_refused_at_setup() -> None:
    torch.manual_seed(0)
    resnet = FrozenCLIP("tiny_test_resnet")
    with pytest.raises(ConfigurationError) as info:
        create_method({"name": "gopro"}, resnet, CLASSES)
    message = str(info.value)
    assert "ViT" in message and "coop" in message and "gopro" not in message.split("(")[-1]  # not offered back
