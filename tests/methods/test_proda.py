"""ProDA: K prompts, the Gaussian surrogate logits, the decorrelation term, prompt sub-batching, mean prediction."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from prompt_learning import FrozenCLIP
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.proda import decorrelation, prompt_positions, surrogate_logits

from ..conftest import CLASSES, UNSEEN

K, M = 8, 4  # small prompt sets for the tiny backbone


def build(backbone: FrozenCLIP, **overrides):
    torch.manual_seed(0)
    return create_method({"name": "proda", "n_prompts": K, "n_ctx": M, **overrides}, backbone, CLASSES)


def covariance_form(x: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, s: float) -> torch.Tensor:
    """The paper's form with the explicit per-dimension class covariance S_d (D, C, C), written with loops."""
    n_prompts, n_cls, dim = w.shape
    mu = w.mean(0)  # (C, D)
    r = w - mu  # (K', C, D)
    S = torch.zeros(dim, n_cls, n_cls, dtype=torch.float64)
    for d in range(dim):
        for i in range(n_cls):
            for j in range(n_cls):
                S[d, i, j] = sum(r[k, i, d] * r[k, j, d] for k in range(n_prompts)) / (n_prompts + 1)
    z = torch.zeros(x.shape[0], n_cls, dtype=torch.float64)
    for b in range(x.shape[0]):
        sigma = torch.einsum("d,dij->ij", x[b].double() ** 2, S)  # (C, C): Sigma_b
        y = int(labels[b])
        for c in range(n_cls):
            z[b, c] = s * x[b].double() @ mu[c].double() + 0.5 * s**2 * (sigma[y, y] + sigma[c, c] - 2 * sigma[y, c])
    return z


def random_case(batch: int = 5, n_prompts: int = 6, n_cls: int = 4, dim: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(batch, dim, generator=g, dtype=torch.float64), dim=-1)
    w = F.normalize(torch.randn(n_prompts, n_cls, dim, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.randint(0, n_cls, (batch,), generator=g)
    return x, w, labels


def test_surrogate_logits_equal_the_covariance_form() -> None:
    x, w, labels = random_case()
    expected = covariance_form(x, w, labels, 100.0)
    got = surrogate_logits(x, w, labels, 100.0)
    assert got.dtype == torch.float32  # computed in float32, whatever the input
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-3)
    assert (got - 100.0 * (x @ w.mean(0).T).float()).abs().max() > 1  # the correction is not negligible here
    torch.testing.assert_close(surrogate_logits(x, w, labels, 100.0, torch.tensor(-3.0)), got - 3.0)


def test_correction_is_exactly_zero_at_the_label_and_positive_elsewhere() -> None:
    x, w, labels = random_case(seed=1)
    z = surrogate_logits(x, w, labels, 50.0)
    plain = 50.0 * (x.float() @ w.float().mean(0).T)  # (B, C)
    rows = torch.arange(len(labels))
    assert torch.equal(z[rows, labels], plain[rows, labels])
    others = torch.ones_like(z, dtype=torch.bool)
    others[rows, labels] = False
    assert (z - plain)[others].min() > 0
    single = surrogate_logits(x, w[:1], labels, 50.0)  # one prompt: no spread, no correction
    torch.testing.assert_close(single, 50.0 * (x.float() @ w[0].float().T))


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op returns."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_surrogate_never_builds_a_d_by_c_by_c_tensor() -> None:
    x, w, labels = random_case(batch=4, n_prompts=4, n_cls=60, dim=16)  # D*C^2 = 57,600 > K'*C*D = 3,840
    w.requires_grad_(True)
    with LargestTensor() as mode:
        surrogate_logits(x, w, labels, 100.0).logsumexp(-1).sum().backward()
    assert mode.largest <= 4 * 60 * 16 < 16 * 60 * 60


def test_decorrelation_matches_a_double_loop() -> None:
    u = F.normalize(torch.randn(5, 9, generator=torch.Generator().manual_seed(2)), dim=-1)
    pairs = [abs(float(u[i] @ u[j])) for i in range(5) for j in range(5) if i != j]
    assert decorrelation(u).item() == pytest.approx(sum(pairs) / len(pairs), rel=1e-6)
    assert decorrelation(u[:1]).item() == 0.0


def test_class_token_positions_follow_the_paper_mix() -> None:
    positions = prompt_positions(32, "mixed")
    assert positions[:8] == ("front",) * 8 and positions[8:16] == ("middle",) * 8 and positions[16:] == ("end",) * 16
    assert prompt_positions(1, "mixed") == ("end",)
    assert prompt_positions(3, "middle") == ("middle",) * 3


def manual_features(backbone: FrozenCLIP, ctx: torch.Tensor, names: list[str], position: str) -> torch.Tensor:
    """Each prompt written out as text with placeholder words "x", whose embeddings are then replaced by the context:
    (C, D) for one prompt ``ctx`` (M, W); a name of None gives the class-free "[SOS] ctx . [EOS]"."""
    slots = " ".join(["x"] * M)
    half_a, half_b = " ".join(["x"] * (M // 2)), " ".join(["x"] * (M - M // 2))
    texts = []
    for name in names:
        if name is None:
            texts.append(f"{slots}.")
        else:
            texts.append({"end": f"{slots} {name}.", "front": f"{name} {slots}.",
                          "middle": f"{half_a} {name} {half_b}."}[position])
    ids = backbone.tokenize(texts)  # (C, L)
    x_id = backbone.tokenize(["x"])[0, 1]
    embeds = backbone.token_embeddings(ids).clone()  # (C, L, W)
    for row in range(len(texts)):
        at = (ids[row] == x_id).nonzero().flatten()
        assert len(at) == M
        embeds[row, at] = ctx.to(embeds.dtype)
    return F.normalize(backbone.encode_text_embeddings(embeds, ids.argmax(-1)).float(), dim=-1)


def test_prompt_features_are_the_prompts_written_out(tiny_backbone: FrozenCLIP) -> None:
    method = build(tiny_backbone)
    assert method.positions == ("front",) * 2 + ("middle",) * 2 + ("end",) * 4
    chosen = [6, 0, 3, 5, 1]
    features = method.prompt_features(CLASSES, chosen)  # (5, C, D)
    assert features.shape == (5, len(CLASSES), tiny_backbone.embed_dim)
    for slot, k in enumerate(chosen):
        expected = manual_features(tiny_backbone, method.context.ctx[k], list(CLASSES.names), method.positions[k])
        torch.testing.assert_close(features[slot], expected, atol=1e-5, rtol=1e-5)
    free = method.free_features()  # (K, D)
    for k in range(K):
        torch.testing.assert_close(free[k], manual_features(tiny_backbone, method.context.ctx[k], [None], "end")[0],
                                   atol=1e-5, rtol=1e-5)


def test_sub_batching_walks_a_permutation(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone, prompt_batch_size=2)
    for _ in range(3):  # every K / K' = 4 steps use every prompt once
        steps = [method.next_prompt_batch() for _ in range(4)]
        assert all(len(s) == 2 for s in steps)
        assert sorted(sum(steps, [])) == list(range(K))
    seen = []
    method.next_prompt_batch = lambda wrapped=method.next_prompt_batch: seen.append(wrapped()) or seen[-1]
    out = method(images, CLASSES)  # training mode: this step's K' prompts
    w = out.extras["prompt_features"]
    torch.testing.assert_close(w, method.prompt_features(CLASSES, seen[0]))
    assert out.extras["free_features"].shape == (K, tiny_backbone.embed_dim)  # decorrelation over all K
    mean = F.normalize(w.mean(0), dim=-1)
    torch.testing.assert_close(out.logits, tiny_backbone.logit_scale * out.image_features @ mean.T)
    with pytest.raises(ConfigurationError, match="must divide"):
        build(tiny_backbone, prompt_batch_size=3)


@pytest.mark.parametrize("normalise", [True, False])
def test_prediction_uses_the_mean_over_all_prompts(tiny_backbone: FrozenCLIP, images, normalise: bool) -> None:
    method = build(tiny_backbone, prompt_batch_size=2, normalise_mean=normalise).eval()
    per_prompt = torch.stack([manual_features(tiny_backbone, method.context.ctx[k], list(UNSEEN.names),
                                              method.positions[k]) for k in range(K)])  # (K, C, D)
    mu = per_prompt.mean(0)
    mu = F.normalize(mu, dim=-1) if normalise else mu
    torch.testing.assert_close(method.encode_classes(UNSEEN), mu, atol=1e-5, rtol=1e-5)
    out = method(images, UNSEEN)
    assert not out.extras
    torch.testing.assert_close(out.logits, tiny_backbone.logit_scale * out.image_features @ mu.T, atol=1e-4, rtol=1e-5)
    assert (mu.norm(dim=-1) - 1).abs().max() < 1e-5 if normalise else (mu.norm(dim=-1) < 1 - 1e-4).all()
    with pytest.raises(ValueError, match="training mode"):
        method.loss(out, torch.tensor([0, 1, 2]))


def test_loss_is_the_surrogate_plus_the_decorrelation(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone, lambda_div=0.5)
    labels = torch.tensor([0, 3, 1])
    out = method(images, CLASSES)
    losses = method.loss(out, labels)
    z = surrogate_logits(out.image_features, out.extras["prompt_features"], labels, tiny_backbone.logit_scale)
    assert set(losses) == {"ce", "div"}
    torch.testing.assert_close(losses["ce"], F.cross_entropy(z, labels))
    torch.testing.assert_close(losses["div"], 0.5 * decorrelation(method.free_features()))
    assert "div" not in method.loss(build(tiny_backbone, lambda_div=0.0)(images, CLASSES), labels)


def test_gradients_reach_the_prompts_only(tiny_backbone: FrozenCLIP, images) -> None:
    labels = torch.tensor([0, 1, 2])
    method = build(tiny_backbone, prompt_batch_size=2, lambda_div=0.0)
    seen = []
    method.next_prompt_batch = lambda wrapped=method.next_prompt_batch: seen.append(wrapped()) or seen[-1]
    sum(method.loss(method(images, CLASSES), labels).values()).backward()
    touched = method.context.ctx.grad.abs().sum(dim=(1, 2)) > 0  # (K,)
    assert touched.nonzero().flatten().tolist() == sorted(seen[0])  # the CE reaches this step's prompts
    assert all(p.grad is None for p in tiny_backbone.parameters())
    method = build(tiny_backbone, prompt_batch_size=2)  # the decorrelation term reaches every prompt
    sum(method.loss(method(images, CLASSES), labels).values()).backward()
    assert (method.context.ctx.grad.abs().sum(dim=(1, 2)) > 0).all()
    assert [n for n, _ in method.named_parameters()] == ["context.ctx"]


def test_chunked_encoding_gives_the_same_features_and_gradients(tiny_backbone: FrozenCLIP, images,
                                                               monkeypatch) -> None:
    labels = torch.tensor([0, 1, 2])
    method = build(tiny_backbone)
    calls = []
    encode = tiny_backbone.encode_text_embeddings
    monkeypatch.setattr(tiny_backbone, "encode_text_embeddings",
                        lambda e, eot, *a, **k: calls.append((e.shape[0], k.get("groups"))) or encode(e, eot, *a, **k))
    sum(method.loss(method(images, CLASSES), labels).values()).backward()
    n_cls = len(CLASSES)
    assert calls == [(2 * n_cls, 2), (2 * n_cls, 2), (4 * n_cls, 4), (K, None)]  # per position; one prefix per prompt
    whole = method.context.ctx.grad.clone()
    calls.clear()
    method.zero_grad()
    method.cfg.max_chunk_prompts = 3 * n_cls  # at most 3 prompts per call, checkpointed
    sum(method.loss(method(images, CLASSES), labels).values()).backward()
    assert sorted(calls[:4]) == sorted([(2 * n_cls, 2), (2 * n_cls, 2), (3 * n_cls, 3), (n_cls, 1)])
    assert len(calls) == 2 * 4 + 1  # the four chunks again in backward (recomputed), the class-free call once
    torch.testing.assert_close(method.context.ctx.grad, whole, atol=1e-6, rtol=1e-5)


def test_export_reload(tiny_backbone: FrozenCLIP, images, tmp_path) -> None:
    method = build(tiny_backbone, normalise_mean=False, prompt_batch_size=4)
    with torch.no_grad():
        method.context.ctx.add_(torch.randn_like(method.context.ctx) * 0.1)
    save_export(tmp_path, method, {"epochs": 0})
    reloaded = load_method(tmp_path, tiny_backbone).eval()
    method.eval()
    assert reloaded.cfg.normalise_mean is False and reloaded.cfg.prompt_batch_size == 4
    assert set(method.export_tensors()) == {"context.ctx"}
    assert reloaded.context.ctx.shape == (K, M, tiny_backbone.text_width)
    assert torch.equal(reloaded.context.ctx, method.context.ctx)
    for classes in (CLASSES, UNSEEN):
        assert torch.equal(method(images, classes).logits, reloaded(images, classes).logits)
    settings = json.loads((tmp_path / "prompt_config.json").read_text())
    assert settings["method"]["class_token_position"] == "mixed"
    assert set(method.text_prompt_tensors()) == {f"context[{k}]" for k in range(K)}
