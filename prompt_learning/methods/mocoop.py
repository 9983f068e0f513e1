"""MoPL: Mixture of Prompt Learning ("MoCoOp" in its code; arXiv 2409.12011; docs/methods/mocoop.md).

Hand-written templates come in semantic groups (``template_groups``, per dataset). Group e gives one soft-prompt
**expert**: the token embeddings of its first template's words before "{}" (n_b) and after it (n_a, periods
removed), learned, in the prompt ``[SOS] before_e  class  after_e [EOS]`` (``experts[e]``, (n_b + n_a, W)).

* Router: g(x) = gate(f̂(x)) (``gate``, Linear D -> E) on the normalised image feature; the top-2 experts
  (i1, i2) and pi = softmax(g_i1, g_i2).
* Expert text features: T_e(c) = norm(g_text(prompt_e(c)) + w), w (1, D) a zero-initialised correction
  (``correction``).
* Class features t~_c(x) = pi_1 T_i1(c) + pi_2 T_i2(c), **not** re-normalised; logits = s f̂(x)^T t~_c(x):
  class features depend on the image, (B, C, D).
* References: G_e(c) = norm(mean over group e's templates t of norm(g_text(t(c)))) (zero-shot CLIP, frozen),
  over every class name the run evaluates (base + new: ``receive_class_names``).
* Text loss: L_t2t = (1/E) sum_e CE over c' of the unscaled cosines <T_e(c), G_e(c')> with target c, T_e here
  on the template's own prompt ending in "." (as the official code builds it).
* Gate loss: q_e = <f̂(x), G_e(y)> + 10 [e in top-2(q)], L_gate = CE(g(x), softmax(q)) with a soft target.
* L = CE + 5 L_t2t + 1 L_gate (``text_loss_weight``, ``gate_loss_weight``).
* The LayerNorms of every ViT block (ln_1, ln_2) are fine-tuned at lr x 0.1 (``finetune_vit_ln``,
  ``ln_lr_scale``): trainable copies swapped into the shared backbone while images are encoded
  (``backbone/overrides.py``); gradient norm clipped to 1.0 (``max_grad_norm``).

Only the experts some image of the batch routes to are encoded. In L_t2t an expert no image routes to counts
as the official code's zero-filled one (all cosines 0: CE = log C, no gradient).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.backbone.overrides import VIT_BLOCK_NORMS
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, MethodOutput, PromptMethod, register_method
from prompt_learning.methods.stages import Optimization
from prompt_learning.prompts.assembly import assemble, check_fits, tokenize_classes
from prompt_learning.prompts.context import phrase_tokens
from prompt_learning.validation import Rule, integer, number

# The official per-dataset lists (dyabel/mocoop configs/datasets/<dataset>.yaml: LASP_PROMPTS cut by GROUPS).
LOW_RES = ["a low resolution photo of the {}.", "a low resolution photo of a {}.", "a pixelated photo of the {}.",
           "a pixelated photo of a {}."]
GOOD = ["a good photo of the {}.", "a good photo of a {}."]
GENERAL = [["a photo of a {}."], ["a photo of many {}."], LOW_RES, GOOD]  # SUN397's list; every list ends with it
OFFICIAL_GROUPS: dict[str, list[list[str]]] = {
    "oxford_pets": [["a photo of the small {}."], ["a photo of the large {}.", "a photo of a large {}."],
                    *GENERAL],
    "sun397": GENERAL,
    "caltech101": [["{} texture."], *GENERAL],
    "dtd": [["{} texture."], *GENERAL],
    "fgvc_aircraft": [["a photo of a {}, a type of aircraft."], *GENERAL],
    "oxford_flowers": [["a photo of a {}, a type of flower."], *GENERAL],
    "food101": [["a photo of a {}."], ["a photo of the delicious {}.", "a photo of the tasty {}.", "A dish of the {}."],
                LOW_RES, GOOD],
    "stanford_cars": [["A photo of the high-performance {}.", "A photo of the modern {}.", "A photo of the fast {}."],
                      *GENERAL],
    "eurosat": [["a centered satellite photo of {}."], ["a photo of a {}."],
                ["a photo of the large {}.", "a photo of a large {}."],
                ["a photo of the small {}.", "a photo of a small {}."], LOW_RES, GOOD],
    "ucf101": [["a photo of a person doing {}."], ["a {} in a video game."], *GENERAL],
    "imagenet": [["a photo of a {}, a type of flower."], ["a photo of a person doing {}."],
                 ["a centered satellite photo of {}."], ["a photo of a {}, a type of aircraft."],
                 ["itap of a {}.", "itap of the {}."], ["a photo of the large {}.", "a photo of a large {}."],
                 ["art of the {}.", "a rendering of a {}.", "a rendering of the {}."], ["a photo of the small {}."],
                 ["a photo of a {}."], ["a photo of many {}."],
                 [*LOW_RES, "a jpeg corrupted photo of the {}.", "a blurry photo of a {}.", "a bad photo of the {}."],
                 ["a cropped photo of the {}.", "a cropped photo of a {}."], ["a bright photo of the {}."], GOOD,
                 ["a close-up photo of the {}."], ["a photo of the clean {}."], ["a {} in a video game."],
                 ["a photo of the hard to see {}."], ["a origami {}."], ["{} texture."]],
}


def template_parts(template: str) -> tuple[str, str]:
    """The words before and after "{}" of a template, periods removed (the expert's initial tokens)."""
    before, after = template.replace(".", "").split("{}")
    return before.strip(), after.strip()


def reference_template(template: str) -> str:
    """The template G_e is computed from: periods removed, one appended (the official code's rule)."""
    return template.replace(".", "").strip() + "."


def _check_groups(groups: Any, key: str, top_k: int) -> None:
    if not isinstance(groups, list | tuple) or len(groups) < max(top_k, 1):
        raise ConfigurationError(f"method.{key} must list at least top_k={top_k} template groups, got {groups!r}.")
    for group in groups:
        if not isinstance(group, list | tuple) or not group or any(
                not isinstance(t, str) or t.count("{}") != 1 for t in group):
            raise ConfigurationError(f"method.{key}: group {group!r} must be a non-empty list of templates, each "
                                     f"with exactly one '{{}}' for the class name.")
        if not any(template_parts(group[0])):
            raise ConfigurationError(f"method.{key}: the first template of group {list(group)!r} must have words "
                                     f"besides the class name: they initialise the group's expert.")


@dataclass
class MoCoOpConfig(MethodConfig):
    name: str = "mocoop"
    template_groups: dict[str, list[list[str]]] = field(
        default_factory=lambda: {k: [list(g) for g in v] for k, v in OFFICIAL_GROUPS.items()})  # dataset -> groups
    default_groups: list[list[str]] = field(default_factory=lambda: [list(g) for g in GENERAL])  # other datasets
    top_k: int = 2  # experts mixed per image
    gate_margin: float = 10.0  # added to the top-k of the gate target q
    text_loss_weight: float = 5.0  # official TEXT_LOSS_WEIGHT (LASP_LOSS_WEIGHT in the ep50 config)
    gate_loss_weight: float = 1.0
    correction: bool = True  # the shared correction w (ENABLE_CORRECTION, TRAIN_W)
    finetune_vit_ln: bool = True  # FINETUNE_VIT_LN: train copies of ln_1/ln_2 of every ViT block
    ln_lr_scale: float = 0.1  # their learning rate: optim.lr x this
    max_grad_norm: float | None = 1.0  # gradient-norm clipping of every learned tensor (null: off)

    RULES: ClassVar[dict[str, Rule]] = {"top_k": integer(1), "gate_margin": number(0), "text_loss_weight": number(0),
                                        "gate_loss_weight": number(0), "ln_lr_scale": number(0),
                                        "max_grad_norm": number(above=0).or_null()}

    def __post_init__(self) -> None:
        _check_groups(self.default_groups, "default_groups", self.top_k)
        for dataset, groups in self.template_groups.items():
            _check_groups(groups, f"template_groups.{dataset}", self.top_k)

    def groups_for(self, dataset: str | None) -> list[list[str]]:
        """The template groups of ``dataset``: its own entry, else ``default_groups``."""
        return [list(g) for g in self.template_groups.get(dataset or "", self.default_groups)]


@dataclass(frozen=True)
class _Tokens:
    """One class set's frozen prompt pieces: ``[SOT] name (.) [EOT]`` ids, their embeddings, EOT and name lengths."""

    embeds: Tensor  # (C, L, W)
    eot: Tensor  # (C,) on the CPU
    name_lens: Tensor  # (C,)


def split_layout(name_lens: Tensor, n_before: int, n_ctx: int, length: int) -> Tensor:
    """(C,) name lengths -> (C, L) gather index into ``[SOT (1) | ctx (M) | name (.) EOT pad]`` that puts the
    first ``n_before`` context vectors before the name and the others right after it."""
    rows = []
    for n_name in name_lens.tolist():
        ctx, rest = list(range(1, 1 + n_ctx)), list(range(1 + n_ctx, length))
        rows.append([0, *ctx[:n_before], *rest[:n_name], *ctx[n_before:], *rest[n_name:]])
    return torch.tensor(rows, dtype=torch.long, device=name_lens.device)  # (C, L)


@register_method
class MoCoOp(PromptMethod):
    """E template-initialised experts (``experts``), the router ``gate``, the correction w and the ViT LN copies."""

    name = "mocoop"
    Config = MoCoOpConfig
    conditional_text = True
    touches_image_tower = True  # the LayerNorm copies (an instance without them narrows it)
    unfreezes_backbone = VIT_BLOCK_NORMS
    uses_unseen_names_in_training = True

    def __init__(self, cfg: MoCoOpConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        backbone.require_text(f"method {self.name!r}")
        self.groups = cfg.groups_for(classes.dataset)
        if len(self.groups) < cfg.top_k:
            raise ConfigurationError(f"method.top_k={cfg.top_k} but {classes.dataset!r} has {len(self.groups)} "
                                     f"template groups; lower top_k or add groups.")
        experts, self.n_before = [], []
        for group in self.groups:
            before, after = (phrase_tokens(backbone, part) for part in template_parts(group[0]))  # (n_b,), (n_a,)
            with torch.no_grad():
                init = backbone.token_embeddings(torch.cat([before, after])[None])[0].float()  # (n_b + n_a, W)
            experts.append(nn.Parameter(init.clone()))
            self.n_before.append(before.numel())
        self.experts = nn.ParameterList(experts)
        self.gate = nn.Linear(backbone.embed_dim, len(self.groups))
        self.correction = nn.Parameter(torch.zeros(1, backbone.embed_dim)) if cfg.correction else None  # w (1, D)
        if cfg.finetune_vit_ln:
            self.require_vision()
            self.unfreeze_backbone()
        else:
            self.unfreezes_backbone, self.touches_image_tower = (), False
        self.reference_classes = classes  # every evaluated class name once the engine gives them
        self._tokens: dict[tuple, _Tokens] = {}
        self._layouts: dict[tuple, Tensor] = {}
        self._references: dict[tuple, Tensor] = {}
        self._label_rows: dict[tuple, Tensor] = {}

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    def receive_class_names(self, classes: ClassSet) -> None:
        missing = sorted(set(self.train_classes.names) - set(classes.names))
        if missing:
            raise ConfigurationError(f"The class names given to method {self.name!r} lack the training classes "
                                     f"{missing[:3]}.")
        self.reference_classes = classes

    # -- experts --------------------------------------------------------------------------------------
    def _class_tokens(self, classes: ClassSet, period: bool) -> _Tokens:
        key = (classes.names, period, str(self.backbone.device))
        if key not in self._tokens:
            b = self.backbone
            t = tokenize_classes(b.tokenize, classes.names, b.eot_token_id, b.sot_token_id,
                                 suffix="." if period else "")
            with torch.no_grad():
                embeds = b.token_embeddings(t.ids)  # (C, L, W)
            self._tokens[key] = _Tokens(embeds, t.eot.cpu(), t.name_lens)
        return self._tokens[key]

    def expert_features(self, e: int, classes: ClassSet, period: bool = False) -> Tensor:
        """T_e(c) for every class: (C, D), normalised after adding w. ``period``: the prompt ends in "." (L_t2t)."""
        t = self._class_tokens(classes, period)
        ctx = self.experts[e]  # (M, W)
        (n_cls, length, _), n_ctx = t.embeds.shape, ctx.shape[0]
        key = (classes.names, period, e, str(self.backbone.device))
        if key not in self._layouts:
            check_fits(t, classes.names, n_ctx, length)  # type: ignore[arg-type]  (eot is all it reads)
            self._layouts[key] = split_layout(t.name_lens, self.n_before[e], n_ctx, length)
        prompts = assemble(t.embeds[:, :1], ctx.unsqueeze(0).expand(n_cls, -1, -1), t.embeds[:, 1 : length - n_ctx],
                           self._layouts[key])  # (C, L, W)
        features = self.backbone.encode_text_embeddings(prompts, t.eot + n_ctx,
                                                        shared_prefix=1 + self.n_before[e]).float()  # (C, D)
        if self.correction is not None:
            features = features + self.correction
        return F.normalize(features, dim=-1)  # (C, D)

    def route(self, image_features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gate logits g (B, E), the top-k experts (B, k) and their weights pi = softmax over the chosen g (B, k)."""
        gate = self.gate(image_features.to(self.gate.weight.dtype))  # (B, E)
        top, chosen = gate.topk(self.cfg.top_k, dim=-1)  # (B, k)
        return gate, chosen, top.float().softmax(-1)

    def mixture(self, chosen: Tensor, weights: Tensor, classes: ClassSet, routed: list[int] | None = None) -> Tensor:
        """t~_c = sum_j pi_j T_{i_j}(c) for each image, encoding only the experts some image routes to (``routed``,
        read from ``chosen`` when not given: the step's one host read): (B, C, D)."""
        routed = torch.unique(chosen).tolist() if routed is None else routed
        bank = torch.stack([self.expert_features(e, classes) for e in routed])  # (R, C, D)
        slot = torch.zeros(self.n_experts, dtype=torch.long, device=chosen.device)
        slot[routed] = torch.arange(len(routed), device=chosen.device)
        return torch.einsum("bk,bkcd->bcd", weights.to(bank.dtype), bank[slot[chosen]])  # (B, C, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        if image_features is None:
            raise ValueError("MoCoOp's class features depend on the image (its routing): pass image_features (B, D).")
        _, chosen, weights = self.route(image_features)
        return self.mixture(chosen, weights, classes)

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        gate, chosen, weights = self.route(image_features)
        routed = torch.unique(chosen).tolist()  # the experts this batch uses, read once (the losses reuse it)
        if text_features is None:
            text_features = self.mixture(chosen, weights, classes, routed)  # (B, C, D)
        return MethodOutput(self.logits(image_features, text_features), image_features, text_features, classes,
                            {"gate": gate, "chosen": chosen, "routed": torch.tensor(routed)})  # routed: on the host

    # -- losses ---------------------------------------------------------------------------------------
    def references(self, classes: ClassSet) -> Tensor:
        """G_e(c): (E, C, D) normalised zero-shot features of each group's templates (frozen, cached)."""
        key = (classes.names, str(self.backbone.device))
        if key not in self._references:
            per_group = [self.backbone.zero_shot_text_features(classes.names, [reference_template(t) for t in g])
                         for g in self.groups]  # E x (C, D)
            self._references[key] = torch.stack(per_group).float()  # (E, C, D)
        return self._references[key]

    def text_loss(self, routed: Sequence[int]) -> Tensor:
        """L_t2t over every evaluated class name; an expert no image routed to adds log C (official zero-fill)."""
        classes = self.reference_classes
        refs = self.references(classes)  # (E, C, D)
        target = torch.arange(len(classes), device=refs.device)  # (C,)
        total = sum(F.cross_entropy(self.expert_features(e, classes, period=True) @ refs[e].T, target)
                    for e in routed)  # each (C, C) unscaled cosines
        return (total + (self.n_experts - len(routed)) * math.log(len(classes))) / self.n_experts

    def gate_loss(self, gate: Tensor, image_features: Tensor, labels: Tensor) -> Tensor:
        """Soft-target CE of the gate logits against softmax(q), q_e = <f̂(x), G_e(y)> + margin [e in top-k(q)]."""
        refs = self.references(self.reference_classes)  # (E, C', D)
        key = (self.reference_classes.names, str(labels.device))
        if key not in self._label_rows:  # training class -> its row of the references
            rows = {n: i for i, n in enumerate(self.reference_classes.names)}
            self._label_rows[key] = torch.tensor([rows[n] for n in self.train_classes.names], device=labels.device)
        index = self._label_rows[key]  # (C_train,)
        q = torch.einsum("bd,ebd->be", image_features.float(), refs[:, index[labels]])  # (B, E)
        top = q.topk(self.cfg.top_k, dim=-1).indices  # (B, k)
        q = q + self.cfg.gate_margin * torch.zeros_like(q).scatter(1, top, 1.0)  # (B, E)
        return F.cross_entropy(gate.float(), q.softmax(-1))

    def extra_losses(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        routed = out.extras["routed"].tolist()  # a host tensor: no device read
        return {"t2t": self.cfg.text_loss_weight * self.text_loss(routed),
                "gate": self.cfg.gate_loss_weight * self.gate_loss(out.extras["gate"], out.image_features, labels)}

    # -- optimisation and export ----------------------------------------------------------------------
    def configure_optimization(self, optim: Mapping[str, Any], max_epochs: int, total_steps: int) -> Optimization:
        """The shared SGD + warm-up cosine over two groups: prompts, gate and w at ``optim.lr``; the backbone
        LayerNorm copies at ``optim.lr x ln_lr_scale``. Gradient norm clipped to ``max_grad_norm``."""
        # the engine's Dassl schedule (torch only), imported where the engine asks for it
        from prompt_learning.engine.schedule import build_sgd_cosine

        copies = self.backbone_overrides()
        backbone_params = list(copies.parameters()) if copies is not None else []
        own = {id(p) for p in backbone_params}
        groups: list[dict[str, Any]] = [{"params": [p for p in self.parameters() if id(p) not in own]}]
        if backbone_params:
            groups.append({"params": backbone_params, "lr": float(optim["lr"]) * self.cfg.ln_lr_scale})
        optimizer, scheduler = build_sgd_cosine(groups, max_epochs=max_epochs, **optim)
        return Optimization(optimizer, scheduler, "epoch", self.cfg.max_grad_norm)

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        return {f"expert[{e}] {self.groups[e][0]!r}": p.detach() for e, p in enumerate(self.experts)}
