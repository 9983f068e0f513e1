"""MoCoOp (MoPL): top-2 routing and the unnormalised mixture, the three losses against formulas written out here,
the LayerNorm copies (gradients, the shared backbone left alone, their own learning rate), the export on a fresh
backbone, and the unseen class names: how they reach the method and how results and tables say so."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prompt_learning import FrozenCLIP
from prompt_learning.backbone.overrides import VIT_BLOCK_NORMS, BackboneOverrides
from prompt_learning.classes import ClassSet
from prompt_learning.data.datasets import build_dataset
from prompt_learning.engine.stages import offer_class_names
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method
from prompt_learning.methods.mocoop import template_parts
from prompt_learning.protocols import build_task
from prompt_learning.protocols.base import EvalSet
from prompt_learning.results import aggregate, write_outputs

from ..conftest import CLASSES, UNSEEN

UCF = ClassSet(CLASSES.names, CLASSES.template, "ucf101")  # 6 groups, one expert with words after the name
ALL = ClassSet(CLASSES.names + UNSEEN.names, CLASSES.template, "ucf101")
LABELS = torch.tensor([0, 1, 3])
LN_NAMES = {f"visual.transformer.resblocks.{i}.{ln}.{w}" for i in range(2) for ln in ("ln_1", "ln_2")
            for w in ("weight", "bias")}  # tiny_test: 2 ViT blocks
OPTIM = {"lr": 0.002, "momentum": 0.9, "weight_decay": 5e-4, "warmup_epochs": 1, "warmup_lr": 1e-5}


def build(backbone: FrozenCLIP, classes: ClassSet = UCF, **cfg):
    torch.manual_seed(0)
    method = create_method({"name": "mocoop", **cfg}, backbone, classes)
    with torch.no_grad():  # away from the init: the prompt tokens then differ from the template's words
        for p in [*method.experts, method.correction, *method.gate.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
    return method


def manual_expert(backbone: FrozenCLIP, method, e: int, names, period: bool) -> torch.Tensor:
    """T_e(c) written out: the template's words replaced in place by the expert's vectors, + w, normalised."""
    before, after = template_parts(method.groups[e][0])
    n_b = len(before.split())
    ctx = method.experts[e]
    rows = []
    for name in names:
        text = " ".join(p for p in (before, name, after) if p) + ("." if period else "")
        ids = backbone.tokenize([text])  # (1, L)
        embeds = backbone.token_embeddings(ids).clone()  # (1, L, W)
        n_name = backbone.tokenize([name]).argmax(-1).item() - 1
        embeds[0, 1 : 1 + n_b] = ctx[:n_b]
        start = 1 + n_b + n_name
        embeds[0, start : start + ctx.shape[0] - n_b] = ctx[n_b:]
        rows.append(backbone.encode_text_embeddings(embeds, ids.argmax(-1))[0])
    return F.normalize(torch.stack(rows).float() + method.correction, dim=-1)  # (C, D)


def manual_references(backbone: FrozenCLIP, method, names) -> torch.Tensor:
    """G_e(c): each group's templates, plain CLIP text features, normalised, averaged, normalised: (E, C, D)."""
    groups = []
    for group in method.groups:
        feats = [F.normalize(backbone.encode_text([t.replace(".", "").format(n) + "." for n in names]).float(), dim=-1)
                 for t in group]
        groups.append(F.normalize(torch.stack(feats).mean(0), dim=-1))
    return torch.stack(groups)


def test_top2_routing_and_unnormalised_mixture_match_a_loop(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone)
    assert len(method.experts) == 6 and [p.shape[0] for p in method.experts] == [6, 5, 4, 4, 6, 5]
    assert method.n_before == [6, 1, 4, 4, 6, 5]  # "a {} in a video game": 1 word before, 4 after
    out = method(images, UCF)
    f = method.encode_images(images)  # (B, D)
    for b in range(images.shape[0]):
        g = (method.gate.weight @ f[b] + method.gate.bias).detach()  # (E,)
        order = sorted(range(6), key=lambda e: -float(g[e]))[:2]
        pi = [math.exp(g[e]) / sum(math.exp(g[j]) for j in order) for e in order]
        mixed = sum(p * manual_expert(tiny_backbone, method, e, UCF.names, period=False) for p, e in zip(pi, order))
        assert out.extras["chosen"][b].tolist() == order
        torch.testing.assert_close(out.text_features[b], mixed, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(mixed.norm(dim=-1), torch.ones(len(UCF)))  # not re-normalised
        torch.testing.assert_close(out.logits[b], tiny_backbone.logit_scale * mixed @ f[b], atol=1e-4, rtol=1e-5)


def test_losses_are_ce_plus_5_t2t_plus_1_soft_gate(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone)
    method.receive_class_names(ALL)
    out = method(images, UCF)
    losses = method.loss(out, LABELS)
    assert set(losses) == {"ce", "t2t", "gate"}
    log_p = out.logits.log_softmax(-1)
    torch.testing.assert_close(losses["ce"], -log_p[torch.arange(3), LABELS].mean())
    refs = manual_references(tiny_backbone, method, ALL.names)  # (E, C', D)
    routed = set(out.extras["chosen"].flatten().tolist())
    terms = []
    for e in range(6):  # an expert no image routed to: the official zero-filled features, all cosines 0
        cos = (manual_expert(tiny_backbone, method, e, ALL.names, period=True) @ refs[e].T if e in routed
               else torch.zeros(len(ALL), len(ALL)))  # (C', C') unscaled
        terms.append(-cos.log_softmax(-1).diagonal().mean())
    torch.testing.assert_close(losses["t2t"], 5.0 * torch.stack(terms).mean(), atol=1e-5, rtol=1e-5)
    f, gate = out.image_features, out.extras["gate"]
    soft = []
    for b in range(3):
        q = torch.stack([f[b] @ refs[e, int(LABELS[b])] for e in range(6)])  # G_e(y): y's row among ALL
        top = sorted(range(6), key=lambda e: -float(q[e].detach()))[:2]
        q = q + torch.tensor([10.0 if e in top else 0.0 for e in range(6)])
        soft.append(-(q.softmax(-1) * gate[b].log_softmax(-1)).sum())
    torch.testing.assert_close(losses["gate"], 1.0 * torch.stack(soft).mean(), atol=1e-5, rtol=1e-5)
    weighted = create_method({"name": "mocoop", "text_loss_weight": 1.0, "gate_loss_weight": 2.0}, tiny_backbone, UCF)
    weighted.load_state_dict(method.state_dict())
    weighted.receive_class_names(ALL)
    again = weighted.loss(weighted(images, UCF), LABELS)
    torch.testing.assert_close(again["t2t"] * 5, losses["t2t"])
    torch.testing.assert_close(again["gate"], 2 * losses["gate"])


def test_gradients_reach_the_layernorm_copies_and_the_routed_experts_only(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone)
    copies = method.backbone_overrides()
    assert set(copies.names) == LN_NAMES and sum(p.numel() for p in copies.parameters()) == 8 * 64
    out = method(images, UCF)
    sum(method.loss(out, LABELS).values()).backward()
    routed = set(out.extras["chosen"].flatten().tolist())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in copies.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in [method.correction, *method.gate.parameters()])
    assert [method.experts[e].grad is not None for e in range(6)] == [e in routed for e in range(6)]
    assert all(p.grad is None and not p.requires_grad for p in tiny_backbone.parameters())


def test_shared_backbone_is_untouched_by_a_step_and_by_an_error_inside_forward(tiny_backbone: FrozenCLIP, images,
                                                                           monkeypatch) -> None:
    method = build(tiny_backbone)
    originals = {k: (v, v.detach().clone()) for k, v in tiny_backbone.model.named_parameters()}
    opt = method.configure_optimization(OPTIM, max_epochs=10, total_steps=10)
    opt.optimizer.step()  # (no gradients yet: nothing moves)
    opt.scheduler.step()  # epoch 2: the full rates
    sum(method.loss(method(images, UCF), LABELS).values()).backward()
    opt.optimizer.step()
    effective = {}
    with method.overridden_backbone():
        effective = {k: v.detach().clone() for k, v in tiny_backbone.model.named_parameters()}
    assert {k for k, v in effective.items() if not torch.equal(v, originals[k][1])} == LN_NAMES

    def failing_encoder(x):
        assert tiny_backbone.model.visual.transformer.resblocks[0].ln_1.weight is \
            method.backbone_copies.get_parameter("visual/transformer/resblocks/0/ln_1/weight")
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny_backbone, "_plain_image_encoder", failing_encoder)
    with pytest.raises(RuntimeError, match="boom"):
        method(images, UCF)
    for k, v in tiny_backbone.model.named_parameters():
        assert v is originals[k][0] and torch.equal(v, originals[k][1]), k


def test_tensors_outside_the_allow_list_are_refused(tiny_backbone: FrozenCLIP) -> None:
    with pytest.raises(ConfigurationError, match="outside the method's allow-list"):
        BackboneOverrides(tiny_backbone, VIT_BLOCK_NORMS, select=["visual.transformer.resblocks.0.*"])
    with pytest.raises(ConfigurationError, match="No tensor of backbone 'tiny_test' matches"):
        BackboneOverrides(tiny_backbone, ["visual.transformer.resblocks.*.ln_3.*"])
    one = BackboneOverrides(tiny_backbone, VIT_BLOCK_NORMS, select=["visual.transformer.resblocks.1.ln_2.bias"])
    assert one.names == ("visual.transformer.resblocks.1.ln_2.bias",)
    bias = tiny_backbone.model.visual.transformer.resblocks[1].ln_2.bias
    with one.applied(), one.applied():  # nested blocks unwind to the original
        assert tiny_backbone.model.visual.transformer.resblocks[1].ln_2.bias is not bias
    assert tiny_backbone.model.visual.transformer.resblocks[1].ln_2.bias is bias


def test_two_parameter_groups_warm_up_alike_and_clip_at_1(tiny_backbone: FrozenCLIP) -> None:
    method = build(tiny_backbone)
    opt = method.configure_optimization(OPTIM, max_epochs=10, total_steps=10)
    prompts, norms = opt.optimizer.param_groups
    assert {id(p) for p in norms["params"]} == {id(p) for p in method.backbone_copies.parameters()}
    assert len(prompts["params"]) + len(norms["params"]) == len(list(method.parameters()))
    assert opt.max_grad_norm == 1.0 and opt.interval == "epoch"
    assert [g["lr"] for g in opt.optimizer.param_groups] == pytest.approx([1e-5, 1e-5])  # Dassl's constant warm-up
    opt.optimizer.step()  # (no gradients: nothing moves)
    opt.scheduler.step()
    assert [g["lr"] for g in opt.optimizer.param_groups] == pytest.approx([0.002, 0.0002])
    opt.scheduler.step()
    cosine = 0.5 * (1 + math.cos(math.pi / 10))
    assert [g["lr"] for g in opt.optimizer.param_groups] == pytest.approx([0.002 * cosine, 0.0002 * cosine])


def test_a_zero_layernorm_rate_keeps_the_copies_frozen(tiny_backbone: FrozenCLIP) -> None:
    method = build(tiny_backbone, ln_lr_scale=0.0)  # the config rules accept 0
    opt = method.configure_optimization(OPTIM, max_epochs=10, total_steps=10)
    rates = []
    for _ in range(3):  # warm-up, then the cosine
        rates.extend(g["lr"] for g in opt.optimizer.param_groups)
        opt.optimizer.step()
        opt.scheduler.step()
    assert rates == pytest.approx([1e-5, 0.0, 0.002, 0.0, 0.002 * 0.5 * (1 + math.cos(math.pi / 10)), 0.0])


def test_without_layernorm_fine_tuning_the_image_tower_is_the_backbone_s(tiny_backbone: FrozenCLIP, images) -> None:
    method = build(tiny_backbone, finetune_vit_ln=False)
    assert method.backbone_overrides() is None and not method.touches_image_tower
    assert len(method.configure_optimization(OPTIM, 10, 10).optimizer.param_groups) == 1
    torch.testing.assert_close(method.encode_images(images),
                               F.normalize(tiny_backbone.encode_image(images).float(), dim=-1))


def test_export_holds_the_layernorms_and_reproduces_logits_on_a_fresh_backbone(tiny_backbone: FrozenCLIP, images,
                                                                               tmp_path) -> None:
    method = build(tiny_backbone, classes=CLASSES)
    with torch.no_grad():
        for p in method.backbone_copies.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_export(tmp_path, method, {"epochs": 1})
    torch.manual_seed(0)
    fresh = FrozenCLIP("tiny_test")  # the same weights as the session backbone, another object
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    reloaded = load_method(tmp_path, fresh)
    assert {f"backbone_copies.{n.replace('.', '/')}" for n in LN_NAMES} <= set(reloaded.export_tensors())
    torch.testing.assert_close(reloaded(images, CLASSES).logits, method(images, CLASSES).logits, atol=0, rtol=0)
    torch.testing.assert_close(reloaded(images, UNSEEN).logits, method(images, UNSEEN).logits, atol=0, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


def test_the_engine_gives_every_evaluated_name_and_the_record_and_table_say_so(tiny_backbone: FrozenCLIP,
                                                                             tmp_path) -> None:
    splits = build_dataset({"name": "synthetic", "train_per_class": 2, "val_per_class": 1, "test_per_class": 1,
                            "image_size": 32})
    task = build_task("base2new", splits, 1, 1)
    method = create_method({"name": "mocoop"}, tiny_backbone, task.train_classes)
    record = offer_class_names(method, task)
    new = next(e.classes for e in task.evals if e.name == "new")
    assert method.reference_classes.names == task.train_classes.names + new.names
    assert record == {"saw_unseen_class_names": True,
                      "class_names_in_training": {"names": len(splits.classnames), "unseen": len(new)}}
    coop = create_method({"name": "coop"}, tiny_backbone, task.train_classes)
    assert offer_class_names(coop, task) == {"saw_unseen_class_names": False}
    few_shot = build_task("few_shot", splits, 1, 1)
    assert offer_class_names(method, few_shot)["saw_unseen_class_names"] is False
    # another dataset's eval set (a cross-dataset target): its names are not handed over
    target = EvalSet("pets", [], ClassSet(("abyssinian", "beagle"), dataset="oxford_pets"))
    few_shot.evals.append(target)
    assert offer_class_names(method, few_shot)["saw_unseen_class_names"] is False
    assert "beagle" not in method.reference_classes.names

    def run(method_name: str, seed: int, base: float, seen: bool) -> dict:
        return {"schema_version": 1, "method": method_name, "backbone": {"name": "ViT-B-16"}, "dataset": "dtd",
                "protocol": "base2new", "shots": 16, "seed": seed, "saw_unseen_class_names": seen,
                "metrics": {"base": {"acc": base}, "new": {"acc": base - 10}}}

    agg = aggregate([run("mocoop", 1, 80.0, True), run("mocoop", 2, 82.0, True), run("coop", 1, 70.0, False)])
    assert {g.method: g.metrics["base"].mean for g in agg.groups} == {"mocoop [unseen names]": 81.0, "coop": 70.0}
    markdown = write_outputs(agg, tmp_path, plots=False)[0].read_text()
    assert "mocoop [unseen names]" in markdown and "not plain base-to-new results" in markdown
