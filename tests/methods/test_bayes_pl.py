"""Bayesian Prompt Learning: the MC objective and prediction against explicit loops, the KL, seeded evaluation,
training noise, the conditional posterior at batch > 1, parameter counts, gradients and export."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.engine.module import PromptLearningModule
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method, list_methods
from prompt_learning.methods.bayes_pl import BayesPL, gaussian_kl

from ..conftest import CLASSES, UNSEEN

L = 3


def build(backbone: FrozenCLIP, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    method = create_method({"name": "bayes_pl", "n_samples": L, **overrides}, backbone, CLASSES)
    with torch.no_grad():  # away from the init (mu = 0), so that every term matters
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return method


def manual_features(backbone: FrozenCLIP, ctx: torch.Tensor, classes: ClassSet = CLASSES) -> torch.Tensor:
    """g([SOS, ctx, class, ".", EOS]) written out: ctx (M, W) in place of the embeddings of "a photo of a"."""
    ids = backbone.tokenize([f"a photo of a {n}." for n in classes.names])  # (C, 77)
    embeds = backbone.token_embeddings(ids).clone()
    embeds[:, 1:5] = ctx
    return F.normalize(backbone.encode_text_embeddings(embeds, ids.argmax(-1)).float(), dim=-1)  # (C, D)


def manual_posterior(method, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two ELU MLPs of q(z|x) for one (D,) image feature, layer by layer."""
    outputs = []
    for net in (method.posterior.mean, method.posterior.log_var):
        h = feature
        for i, linear in enumerate(m for m in net if isinstance(m, torch.nn.Linear)):
            h = linear.weight @ h + linear.bias
            h = F.elu(h) if i < 2 else h
        outputs.append(h)
    return outputs[0], outputs[1]  # (W,), (W,)


def probabilities(backbone: FrozenCLIP, feature: torch.Tensor, class_features: torch.Tensor) -> list[float]:
    """p(c|x) = exp(s cos_c) / sum_j exp(s cos_j) for one image, as a list."""
    scores = [math.exp(float(backbone.logit_scale * (feature @ t))) for t in class_features]
    return [s / sum(scores) for s in scores]


def test_mc_objective_and_prediction_match_an_explicit_loop(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone)
    labels = torch.tensor([0, 1, 3])
    eps = method.noise(L, method.context.ctx.shape[-1])  # the noise the next training forward draws
    out = method(images, CLASSES)
    losses = method.loss(out, labels)
    with torch.no_grad():
        z = method.mu + eps * torch.exp(method.log_var / 2)  # (L, W)
        per_sample = [manual_features(tiny_backbone, method.context.ctx + z[k]) for k in range(L)]
        nll, kl_terms = 0.0, []
        for b in range(images.shape[0]):
            p = [probabilities(tiny_backbone, out.image_features[b], per_sample[k]) for k in range(L)]
            nll -= math.log(sum(p[k][int(labels[b])] for k in range(L)) / L) / images.shape[0]
            mean_p = [sum(p[k][c] for k in range(L)) / L for c in range(len(CLASSES))]
            torch.testing.assert_close(out.logits[b], torch.tensor([math.log(v) for v in mean_p]), atol=1e-5, rtol=1e-5)
        for m, v in zip(method.mu.tolist(), method.log_var.tolist(), strict=True):
            kl_terms.append(0.5 * (math.exp(v) + m * m - 1 - v))
    assert losses["mc_nll"].item() == pytest.approx(nll, rel=1e-5, abs=1e-6)
    assert losses["kl"].item() == pytest.approx(0.001 * sum(kl_terms) / len(kl_terms), rel=1e-5)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(3))  # log-probabilities
    assert BayesPL.logits_are_log_probs


def test_kl_is_the_gaussian_kl_to_the_standard_normal_averaged_over_dimensions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, log_var = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    posterior = torch.distributions.Normal(mu, torch.exp(log_var / 2))
    reference = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0))  # (5, 7)
    per_image = reference.mean(-1)  # the official mean over dimensions, then over the batch
    torch.testing.assert_close(gaussian_kl(mu, log_var), per_image.mean())
    torch.testing.assert_close(gaussian_kl(mu[0], log_var[0]), per_image[0])


def test_conditional_kl_is_per_image_then_averaged(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone, posterior="conditional")
    out = method(images, CLASSES)
    kl = method.loss(out, torch.tensor([0, 1, 2]))["kl"]
    with torch.no_grad():
        per_image = []
        for b in range(images.shape[0]):
            mu, log_var = manual_posterior(method, out.image_features[b])
            per_image.append(sum(0.5 * (math.exp(v) + m * m - 1 - v) for m, v in zip(mu.tolist(), log_var.tolist(),
                                                                                       strict=True)) / mu.numel())
    assert kl.item() == pytest.approx(0.001 * sum(per_image) / len(per_image), rel=1e-5)


@pytest.mark.parametrize("posterior", ["unconditional", "conditional"])
def test_evaluation_is_seeded_and_identical_across_builds(tiny_backbone: FrozenCLIP, images, posterior) -> None:
    first = build(tiny_backbone, posterior=posterior).eval()
    logits = first(images, CLASSES).logits
    torch.manual_seed(123)  # the global RNG does not matter in evaluation
    assert torch.equal(first(images, CLASSES).logits, logits)
    again = build(tiny_backbone, posterior=posterior).eval()  # a fresh build of the same run
    assert torch.equal(again(images, CLASSES).logits, logits)
    other = build(tiny_backbone, posterior=posterior, eval_seed=1).eval()
    assert (other(images, CLASSES).logits - logits).abs().max() > 1e-4
    # the evaluation samples are shared by all images: a batch scores as its images one by one
    single = torch.cat([first(images[b : b + 1], CLASSES).logits for b in range(images.shape[0])])
    torch.testing.assert_close(single, logits, atol=1e-5, rtol=1e-5)


def test_training_noise_differs_between_steps_and_follows_the_run_seed(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone)
    labels = torch.tensor([0, 1, 2])
    first = method(images, CLASSES)
    torch.testing.assert_close(method(images, CLASSES).logits, first.logits)  # one step: one draw
    method.loss(first, labels)  # ends the step
    second = method(images, CLASSES).logits
    assert (second - first.logits).abs().max() > 1e-4
    assert build(tiny_backbone).cfg.train_seed == method.cfg.train_seed
    assert build(tiny_backbone, seed=1).cfg.train_seed != method.cfg.train_seed
    eval_logits = method.eval()(images, CLASSES).logits
    assert (eval_logits - second).abs().max() > 1e-4  # evaluation has its own samples


def test_conditional_batch_equals_per_image_calls_with_the_same_noise(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone, posterior="conditional")
    assert method.conditional_text and not list_methods()["bayes_pl"].conditional_text
    features = method.encode_images(images)  # (B, D)
    eps = torch.randn(images.shape[0], L, method.context.ctx.shape[-1], generator=torch.Generator().manual_seed(3))
    batch = method.encode_samples(CLASSES, eps, features)  # (B, L, C, D)
    assert batch.shape == (images.shape[0], L, len(CLASSES), tiny_backbone.embed_dim)
    with torch.no_grad():
        for b in range(images.shape[0]):
            one = method.encode_samples(CLASSES, eps[b : b + 1], features[b : b + 1])[0]  # (L, C, D)
            torch.testing.assert_close(batch[b], one, atol=1e-5, rtol=1e-5)
            mu, log_var = manual_posterior(method, features[b])
            for k in range(L):
                ctx = method.context.ctx + mu + eps[b, k] * torch.exp(log_var / 2)  # (M, W): one z for all tokens
                torch.testing.assert_close(batch[b, k], manual_features(tiny_backbone, ctx), atol=1e-5, rtol=1e-5)


def test_chunked_encoding_gives_the_same_features_and_gradients(tiny_backbone: FrozenCLIP, images) -> None:
    labels = torch.tensor([0, 1, 2])
    results = []
    for budget in (4096, 2 * len(CLASSES)):  # one call, then chunks of two samples under checkpointing
        method = build(tiny_backbone, posterior="conditional", max_chunk_prompts=budget)
        out = method(images, CLASSES)
        sum(method.loss(out, labels).values()).backward()
        results.append((out.logits.detach(), {n: p.grad.clone() for n, p in method.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-6, rtol=1e-5)


def test_parameter_counts_follow_the_formula(tiny_backbone: FrozenCLIP) -> None:
    d, w = tiny_backbone.embed_dim, tiny_backbone.text_width
    h = d // 2
    unconditional = build(tiny_backbone)
    assert {n: tuple(p.shape) for n, p in unconditional.named_parameters()} == {
        "context.ctx": (4, w), "mu": (w,), "log_var": (w,)}
    mlp = d * h + h + h * h + h + h * w + w
    conditional = build(tiny_backbone, posterior="conditional")
    assert sum(p.numel() for p in conditional.parameters()) == 4 * w + 2 * mlp
    assert sum(p.numel() for p in unconditional.parameters()) == 4 * w + 2 * w  # ViT-B/16: 3,072
    torch.manual_seed(0)
    fresh = create_method({"name": "bayes_pl"}, tiny_backbone, CLASSES)
    assert torch.equal(fresh.mu, torch.zeros(w)) and 0 <= fresh.log_var.min() and fresh.log_var.max() < 1


@pytest.mark.parametrize("posterior", ["unconditional", "conditional"])
def test_gradients_reach_the_context_and_the_posterior_only(tiny_backbone: FrozenCLIP, images, posterior) -> None:
    method = build(tiny_backbone, posterior=posterior)
    out = method(images, CLASSES)
    sum(method.loss(out, torch.tensor([0, 1, 2])).values()).backward()
    names = {n for n, p in method.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert names == {n for n, _ in method.named_parameters()}
    assert names >= ({"context.ctx", "mu", "log_var"} if posterior == "unconditional" else
                     {"context.ctx", "posterior.mean.4.weight", "posterior.log_var.0.weight"})
    assert all(p.grad is None for p in tiny_backbone.parameters())


def test_samples_per_dataset_and_config_errors(tiny_backbone: FrozenCLIP) -> None:
    def samples(dataset: str | None, **overrides) -> int:
        classes = ClassSet(CLASSES.names, CLASSES.template, dataset)
        return create_method({"name": "bayes_pl", **overrides}, tiny_backbone, classes).n_samples

    assert (samples("dtd"), samples("ucf101"), samples("imagenet"), samples(None), samples("dtd", n_samples=7)) == \
        (40, 5, 10, 10, 7)
    assert samples("dtd", n_samples_per_dataset={"dtd": 2}) == 2
    for bad in ({"posterior": "amortised"}, {"class_specific": True, "ctx_init": ""}):
        with pytest.raises(ConfigurationError):
            create_method({"name": "bayes_pl", **bad}, tiny_backbone, CLASSES)


@pytest.mark.parametrize("posterior", ["unconditional", "conditional"])
def test_export_reload_gives_identical_logits(tiny_backbone: FrozenCLIP, images, tmp_path, posterior) -> None:
    method = build(tiny_backbone, posterior=posterior).eval()
    save_export(tmp_path, method, {"epochs": 1})
    recorded = json.loads((tmp_path / "prompt_config.json").read_text())["method"]
    assert (recorded["n_samples"], recorded["train_seed"]) == (L, method.cfg.train_seed)
    torch.manual_seed(99)
    reloaded = load_method(tmp_path, tiny_backbone).eval()
    for classes in (CLASSES, UNSEEN):
        assert torch.equal(reloaded(images, classes).logits, method(images, classes).logits)


def test_the_engine_encodes_the_sampled_class_features_once_per_evaluation(tiny_backbone, images, monkeypatch) -> None:
    method = build(tiny_backbone).eval()
    module = PromptLearningModule(tiny_backbone, method, CLASSES, [("test", CLASSES)])
    calls = []
    encode = method.encode_classes
    monkeypatch.setattr(method, "encode_classes", lambda *a, **k: calls.append(1) or encode(*a, **k))
    first = module._eval_logits("test", CLASSES, images)
    second = module._eval_logits("test", CLASSES, images.flip(0))
    assert len(calls) == 1 and module._text_features["test"].shape == (L, len(CLASSES), tiny_backbone.embed_dim)
    torch.testing.assert_close(second, first.flip(0))
    torch.testing.assert_close(first, method(images, CLASSES).logits)
