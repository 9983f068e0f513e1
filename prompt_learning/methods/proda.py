"""ProDA: Prompt Distribution Learning (Lu et al., CVPR 2022; docs/methods/proda.md).

K soft prompts P_1 .. P_K (M learned tokens each) give, for every class c, K text features
w_{k,c} = norm(g([SOS, P_k, class c, ".", EOS])). ProDA reads them as samples of a Gaussian classifier
weight w_c ~ N(mu_c, Sigma_c) and trains on a closed-form upper bound of the expected cross-entropy:

* mu_c = mean_k w_{k,c},  r_{k,c} = w_{k,c} - mu_c (over the K' prompts of the step);
* surrogate logits (:func:`surrogate_logits`), zero correction at c = y:
  z_{b,c} = s x_b^T mu_c + 1/2 s^2 sum_k sum_d x_{b,d}^2 (r_{k,y,d} - r_{k,c,d})^2 / (K' + 1);
  this equals the per-dimension class-pair covariance form 1/2 s^2 (Sigma_b(y,y) + Sigma_b(c,c) - 2 Sigma_b(y,c)),
  Sigma_b(i,j) = sum_d x_{b,d}^2 S_d(i,j), S_d(i,j) = sum_k r_{k,i,d} r_{k,j,d} / (K'+1), without building the
  (D, C, C) tensor S: the square is expanded, O(K' B C D);
* L = CE(z, y) + lambda_div * mean_{k != k'} |u_k^T u_k'|, u_k = norm(g([SOS, P_k, ".", EOS])) over all K prompts
  (:func:`decorrelation`);
* prediction: s x^T mu_c, mu over all K prompts (re-normalised with ``normalise_mean``).

Each step uses K' = ``prompt_batch_size`` prompts (all K when null): a random permutation of the K prompts walked
in chunks, so every prompt is used once per K / K' steps. The class token sits at the front, in the middle or at
the end of the context (``class_token_position="mixed"``: 1/4, 1/4 and 1/2 of the prompts, the paper's mix).
There is no official code; which choices are the paper's and which are this project's: docs/methods/proda.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodConfig, MethodOutput, PromptMethod, register_method
from prompt_learning.prompts.assembly import CLASS_TOKEN_POSITIONS, assemble
from prompt_learning.prompts.class_prompts import ClassPrompts
from prompt_learning.prompts.context import ContextVectors
from prompt_learning.validation import BOOLEAN, Rule, integer, number, one_of

PLACEMENTS = ("mixed", *CLASS_TOKEN_POSITIONS)


@dataclass(frozen=True)
class _NoClass:
    """What ``ClassPrompts`` reads of a class set, for the class-free prompt "[SOS] ctx . [EOS]" (an empty name;
    a ``ClassSet`` refuses one)."""

    names: tuple[str, ...] = ("",)


@dataclass
class ProDAConfig(MethodConfig):
    name: str = "proda"
    n_prompts: int = 32  # K
    n_ctx: int = 16  # M, learned tokens per prompt
    class_token_position: str = "mixed"  # mixed (1/4 front, 1/4 middle, 1/2 end) | end | middle | front
    prompt_batch_size: int | None = None  # K' prompts per step; null: all K
    lambda_div: float = 1.0  # weight of the decorrelation term
    init_std: float = 0.02  # prompts start at N(0, init_std^2)
    normalise_mean: bool = True  # predict with norm(mu_c) (true) or the raw mean mu_c (false)
    max_chunk_prompts: int = 4096  # class prompts per text-tower call
    activation_checkpointing: bool = True  # over the budget while training: keep one chunk's activations

    RULES: ClassVar[dict[str, Rule]] = {
        "n_prompts": integer(1), "n_ctx": integer(1), "class_token_position": one_of(PLACEMENTS),
        "prompt_batch_size": integer(1).or_null(), "lambda_div": number(0), "init_std": number(0),
        "normalise_mean": BOOLEAN, "max_chunk_prompts": integer(1), "activation_checkpointing": BOOLEAN}

    def __post_init__(self) -> None:
        if self.class_token_position not in PLACEMENTS:
            raise ConfigurationError(f"method.class_token_position={self.class_token_position!r}; choose one of "
                                     f"{PLACEMENTS}.")
        size, k = self.prompt_batch_size, self.n_prompts
        if isinstance(size, int) and isinstance(k, int) and (size < 1 or size > k or k % size):
            raise ConfigurationError(f"method.prompt_batch_size={size} must divide method.n_prompts={k} (each step "
                                     f"uses one chunk of a permutation of the prompts); e.g. {k // 4 or 1}, or null "
                                     f"for all {k}.")


def prompt_positions(n_prompts: int, placement: str) -> tuple[str, ...]:
    """Where each prompt puts the class name: ``mixed`` gives the first K//4 ``front``, the next K//4 ``middle``
    and the rest ``end``; any other value puts every prompt's class name there."""
    if placement != "mixed":
        return (placement,) * n_prompts
    quarter = n_prompts // 4
    return ("front",) * quarter + ("middle",) * quarter + ("end",) * (n_prompts - 2 * quarter)


def surrogate_logits(image_features: Tensor, prompt_features: Tensor, labels: Tensor, scale: Tensor | float,
                     bias: Tensor | None = None) -> Tensor:
    """ProDA's label-dependent logits z (B, C) from normalised image features x (B, D) and the K' per-prompt class
    features w (K', C, D) (module docstring). The square is expanded, sum_d x_d^2 (r_y - r_c)^2 =
    (x^2 . Q_y) + (x^2 . Q_c) - 2 sum_k (x^2 r_{k,y}) . r_{k,c} with Q_c = sum_k r_{k,c}^2, so nothing of size
    D * C^2 is built. Computed in float32 outside autocast: the correction is a difference of similar terms
    multiplied by s^2."""
    with torch.autocast(image_features.device.type, enabled=False):
        x, w = image_features.float(), prompt_features.float()  # (B, D), (K', C, D)
        n_prompts = w.shape[0]
        mean = w.mean(0)  # (C, D): mu_c
        r = w - mean  # (K', C, D)
        x2 = x.square()  # (B, D)
        spread = x2 @ r.square().sum(0).T  # (B, C): sum_d x_d^2 Q_{c,d}
        cross = torch.einsum("kbd,kcd->bc", r[:, labels] * x2, r)  # (B, C): sum_k sum_d x_d^2 r_{k,y,d} r_{k,c,d}
        own = spread.gather(1, labels[:, None])  # (B, 1): the c = y entry
        correction = (own + spread - 2 * cross).clamp_min(0) / (n_prompts + 1)  # (B, C)
        correction = correction.scatter(1, labels[:, None], 0.0)  # exactly zero at c = y
        z = scale * (x @ mean.T) + 0.5 * scale ** 2 * correction  # (B, C)
        return z if bias is None else z + bias


def decorrelation(free_features: Tensor) -> Tensor:
    """mean_{k != k'} |u_k^T u_k'| of normalised class-free prompt features u (K, D); 0 for a single prompt."""
    n = free_features.shape[0]
    if n < 2:
        return free_features.sum() * 0
    sim = free_features.float() @ free_features.float().T  # (K, K)
    # off-diagonal mean without a boolean mask (that would size its output on the host: a device read)
    return (sim.abs().sum() - sim.diagonal().abs().sum()) / (n * (n - 1))


@register_method
class ProDA(PromptMethod):
    """K prompts ``context.ctx`` (K, M, W) and their Gaussian surrogate loss."""

    name = "proda"
    Config = ProDAConfig

    def __init__(self, cfg: ProDAConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        text = backbone.require_text(f"method {self.name!r}")
        # one (M, W) context per prompt: ContextVectors' per-class layout, indexed by prompt here
        self.context = ContextVectors(cfg.n_ctx, text.width, cfg.n_prompts, None, cfg.init_std)  # (K, M, W)
        self.positions = prompt_positions(cfg.n_prompts, cfg.class_token_position)
        self.class_prompts = {p: ClassPrompts(backbone, cfg.n_ctx, p) for p in dict.fromkeys(self.positions)}
        self.free_prompts = ClassPrompts(backbone, cfg.n_ctx, "end")  # "[SOS] ctx . [EOS]", no class name
        self._order: list[int] = []  # the permutation being walked (training state, not exported)
        self._cursor = 0

    # -- prompt sub-batching ---------------------------------------------------------------------------
    def next_prompt_batch(self) -> list[int]:
        """The K' prompts of this training step: the next chunk of a random permutation (a new one once the last
        is used up); all K in order when ``prompt_batch_size`` is null or K."""
        k, size = self.cfg.n_prompts, self.cfg.prompt_batch_size or self.cfg.n_prompts
        if size >= k:
            return list(range(k))
        if self._cursor >= len(self._order):  # host-side (CPU) permutation: no device read
            self._order, self._cursor = torch.randperm(k).tolist(), 0
        chunk = self._order[self._cursor : self._cursor + size]
        self._cursor += size
        return chunk

    # -- text features -----------------------------------------------------------------------------------
    def prompt_features(self, classes: ClassSet, prompts: Sequence[int]) -> Tensor:
        """w (K', C, D): the normalised class features of the prompts ``prompts`` (K' indices), in that order.
        Prompts are encoded by class-token position, at most ``max_chunk_prompts`` class prompts per text-tower
        call; with gradients on and more than that budget, each call runs under activation checkpointing."""
        self.check_classes(classes)
        n_cls, chosen = len(classes), [int(k) for k in prompts]
        per_call = max(1, self.cfg.max_chunk_prompts // n_cls)
        recompute = (self.cfg.activation_checkpointing and torch.is_grad_enabled()
                     and len(chosen) * n_cls > self.cfg.max_chunk_prompts)
        features, slots = [], []
        for position in self.class_prompts:
            mine = [j for j, k in enumerate(chosen) if self.positions[k] == position]  # slots in the output
            for start in range(0, len(mine), per_call):
                part = mine[start : start + per_call]
                ctx = self.context.ctx[[chosen[j] for j in part]]  # (k, M, W)
                encode = self.class_prompts[position].features_per_context  # (k, C, D)
                features.append(checkpoint(encode, classes, ctx, use_reentrant=False) if recompute
                                else encode(classes, ctx))
                slots.extend(part)
        order = sorted(range(len(slots)), key=slots.__getitem__)  # output slot j sits at row order[j]
        return torch.cat(features)[torch.tensor(order, device=features[0].device)]  # (K', C, D)

    def free_features(self) -> Tensor:
        """u (K, D): normalised features of the class-free prompts [SOS, P_k, ".", EOS] of all K prompts."""
        t, k = self.free_prompts.tokens(_NoClass()), self.cfg.n_prompts
        prompts = assemble(t.prefix.expand(k, -1, -1), self.context.ctx, t.suffix.expand(k, -1, -1),
                           t.layout.expand(k, -1))  # (K, L, W)
        return F.normalize(self.backbone.encode_text_embeddings(prompts, t.eot.repeat(k)).float(), dim=-1)  # (K, D)

    def mean_features(self, prompt_features: Tensor) -> Tensor:
        """(K', C, D) -> (C, D) the class means mu_c, normalised when ``normalise_mean``."""
        mean = prompt_features.mean(0)  # (C, D)
        return F.normalize(mean, dim=-1) if self.cfg.normalise_mean else mean

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """(C, D) the prediction weights: mu_c over all K prompts."""
        return self.mean_features(self.prompt_features(classes, range(self.cfg.n_prompts)))

    # -- forward and loss ---------------------------------------------------------------------------------
    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        """In training (``self.training``, no class features given): the K' prompts of this step; the logits are
        the plain mean-feature ones (for accuracy), and ``extras`` carries what :meth:`loss` needs:
        ``prompt_features`` w (K', C, D) and ``free_features`` u (K, D). Otherwise: prediction with mu over all K."""
        if text_features is not None or not self.training:
            return super().forward_features(image_features, classes, text_features)
        per_prompt = self.prompt_features(classes, self.next_prompt_batch())  # (K', C, D)
        mean = self.mean_features(per_prompt)  # (C, D)
        extras = {"prompt_features": per_prompt}
        if self.cfg.lambda_div > 0 and self.cfg.n_prompts > 1:
            extras["free_features"] = self.free_features()  # (K, D)
        return MethodOutput(self.logits(image_features, mean), image_features, mean, classes, extras)

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """{"ce": CE(z, y) on the surrogate logits, "div": lambda_div * decorrelation} (module docstring)."""
        if "prompt_features" not in out.extras:
            raise ValueError("ProDA's loss reads the per-prompt class features of a training forward: call the "
                             "method in training mode (method.train()) without text_features.")
        z = surrogate_logits(out.image_features, out.extras["prompt_features"], labels, self.backbone.logit_scale,
                             self.backbone.logit_bias)  # (B, C)
        losses = {"ce": F.cross_entropy(z, labels)}
        if "free_features" in out.extras:
            losses["div"] = self.cfg.lambda_div * decorrelation(out.extras["free_features"])
        return losses

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        ctx = self.context.ctx.detach()  # (K, M, W)
        return {f"context[{k}]": ctx[k] for k in range(ctx.shape[0])}
