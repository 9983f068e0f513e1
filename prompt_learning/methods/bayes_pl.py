"""Bayesian Prompt Learning (Derakhshani et al., "Bayesian Prompt Learning for Image-Language Model
Generalization", ICCV 2023; "VPT" in the official code saic-fi/Bayesian-Prompt-Learning/trainers/vpt.py;
docs/methods/bayes_pl.md).

A residual z in R^W added to every context vector is a latent variable with a Gaussian variational posterior
q(z) = N(mu, diag(exp(l))) (``posterior="unconditional"``, learned mu and log-variance l) or
q(z|x) = N(mu(x), diag(exp(l(x)))) (``posterior="conditional"``: two 3-layer ELU MLPs D -> D/2 -> D/2 -> W of the
normalised image feature). With L samples eps_l ~ N(0, I):

* z_l = mu + eps_l * exp(l / 2),  ctx_l = ctx + z_l (the same z_l for the M tokens)      (:meth:`encode_samples`)
* log p_l(c|x) = log_softmax_c(s * f(x)^T g([SOS, ctx_l, class_c, ".", EOS]))          (:meth:`sample_log_probs`)
* loss = -mean_b[logsumexp_l log p_l(y_b|x_b) - log L] + kl_weight * KL                   (:meth:`loss`)
  with KL = mean_d KL(N(mu_d, e^{l_d}) || N(0, 1)), per image then over the batch for q(z|x);
* prediction: log((1/L) sum_l p_l(c|x)) (:func:`mc_average`): the logits ARE log-probabilities.

Noise. Training: the noise of step k comes from a generator seeded by (``train_seed``, k); ``train_seed`` is drawn
from the global RNG when the method is built (so the run's seed sets it) and recorded in the config, and
:meth:`loss` ends a step. Evaluation (not ``self.training``): the same L samples every time, from ``eval_seed``,
shared by all images, so reruns give identical logits and the unconditional (L, C, D) class features are encoded
once per evaluation. The conditional posterior is ``conditional_text`` (per-image features (B, L, C, D)). The B*L*C
prompts go through the text tower with one shared prefix per sample (Tier C), in chunks of ``max_chunk_prompts``
(activation checkpointing while training over the budget), so any batch size is exact: a batch of B equals B
batch-1 calls with the same noise (the official conditional variant is correct at batch 1 only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodOutput, register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.validation import Rule, dict_of, integer, is_integer, number, one_of

POSTERIORS = ("unconditional", "conditional")
DEFAULT_SAMPLES = 10  # L of the official config (TRAINER.VPT.L)
# L per dataset: the official base-to-new commands, saic-fi/Bayesian-Prompt-Learning/scripts/vpt/train_eval_<dataset>.py
# as https://github.com/saic-fi/Bayesian-Prompt-Learning/blob/main/VPT.md runs them
OFFICIAL_SAMPLES = {"caltech101": 20, "oxford_pets": 40, "stanford_cars": 20, "oxford_flowers": 10, "food101": 20,
                    "fgvc_aircraft": 10, "sun397": 20, "dtd": 40, "eurosat": 20, "ucf101": 5, "imagenet": 10}
_STEP_MIX = 0x9E3779B97F4A7C15  # spreads the per-step seeds of one run over the seed space (golden-ratio constant)


@dataclass
class BayesPLConfig(CoOpConfig):
    name: str = "bayes_pl"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    posterior: str = "unconditional"  # unconditional (the official shipped config) | conditional (image-amortised)
    n_samples: int | None = None  # L; null: n_samples_per_dataset[training dataset], else 10 (recorded once built)
    n_samples_per_dataset: dict[str, int] = field(default_factory=lambda: dict(OFFICIAL_SAMPLES))
    kl_weight: float = 0.001  # hard-coded in the official code
    eval_seed: int = 0  # the L evaluation samples: identical in every evaluation and rerun
    train_seed: int | None = None  # training noise; null: drawn from the global RNG when built (then recorded)
    max_chunk_prompts: int = 4096  # class prompts per text-tower call (L*C, or B*L*C for the conditional posterior)
    activation_checkpointing: bool = True  # with several chunks while training: keep one chunk's activations

    RULES: ClassVar[dict[str, Rule]] = {
        "posterior": one_of(POSTERIORS),
        "n_samples": Rule(lambda v: v is None or (is_integer(v) and v >= 1),
                          "null (the training dataset's L from method.n_samples_per_dataset) or an integer >= 1"),
        "n_samples_per_dataset": dict_of(integer(1), "a mapping of dataset names to L (integers >= 1)"),
        "kl_weight": number(0), "eval_seed": integer(0), "train_seed": Rule(
            lambda v: v is None or (is_integer(v) and v >= 0), "null (from the run's seed) or an integer >= 0"),
        "max_chunk_prompts": integer(1)}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_specific:
            raise ConfigurationError("method=bayes_pl has one context shared by all classes; drop "
                                     "method.class_specific=true.")
        if self.posterior not in POSTERIORS:
            raise ConfigurationError(f"method.posterior={self.posterior!r}; choose one of {POSTERIORS}.")


class AmortisedPosterior(nn.Module):
    """q(z|x): two MLPs Linear(D, H) -> ELU -> Linear(H, H) -> ELU -> Linear(H, W), H = D // 2, mapping the
    normalised image feature to the mean and the log-variance of z (the official ``Amortized`` block)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        hidden = max(1, in_dim // 2)
        self.mean, self.log_var = (nn.Sequential(nn.Linear(in_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden),
                                                 nn.ELU(), nn.Linear(hidden, out_dim)) for _ in range(2))

    def forward(self, image_features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, D) -> mu (B, W), log-variance (B, W)."""
        return self.mean(image_features), self.log_var(image_features)


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """mean over every entry of KL(N(mu, e^l) || N(0, 1)) = (e^l + mu^2 - 1 - l) / 2: (W,) or (B, W) -> scalar
    (mean over dimensions; for (B, W), per image then over the batch, which is the same mean)."""
    return 0.5 * (log_var.float().exp() + mu.float() ** 2 - 1.0 - log_var.float()).mean()


def mc_average(sample_log_probs: Tensor) -> Tensor:
    """(L, B, C) log p_l -> (B, C) log((1/L) sum_l p_l), computed as logsumexp_l - log L."""
    return torch.logsumexp(sample_log_probs, dim=0) - math.log(sample_log_probs.shape[0])


def mc_log_likelihood(sample_log_probs: Tensor, labels: Tensor) -> Tensor:
    """(L, B, C) log p_l and (B,) labels -> (B,) logsumexp_l log p_l(y_b|x_b) - log L."""
    n = sample_log_probs.shape[0]
    index = labels.view(1, -1, 1).expand(n, -1, 1)  # (L, B, 1)
    return mc_average(sample_log_probs.gather(-1, index))[:, 0]  # (B,)


@register_method
class BayesPL(CoOp):
    """Context ``context.ctx`` (M, W) from CoOp plus the posterior: ``mu`` and ``log_var`` (W,) each
    (unconditional), or ``posterior`` (:class:`AmortisedPosterior`, conditional). ``n_samples`` is L."""

    name = "bayes_pl"
    Config = BayesPLConfig
    logits_are_log_probs = True

    def __init__(self, cfg: BayesPLConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        width = self.context.ctx.shape[-1]
        # the instance narrows the class flag: the conditional posterior makes class features per image
        self.conditional_text = cfg.posterior == "conditional"  # type: ignore[misc]
        if self.conditional_text:
            self.posterior = AmortisedPosterior(backbone.embed_dim, width)
        else:
            self.mu = nn.Parameter(torch.zeros(width))  # (W,) zeros, as the official mean_posterior
            self.log_var = nn.Parameter(torch.rand(width))  # (W,) U[0, 1): the official "std_posterior", a log-variance
        if cfg.n_samples is None:  # the training dataset's L, recorded so that an export reloads with it
            cfg.n_samples = cfg.n_samples_per_dataset.get(classes.dataset or "", DEFAULT_SAMPLES)
        if cfg.train_seed is None:  # from the run's seed (drawn after the initialisation above)
            cfg.train_seed = int(torch.randint(0, 2**62, ()).item())
        self.n_samples = cfg.n_samples
        self._step = 0  # training steps ended by loss(): indexes the training noise

    # -- the posterior and its samples --------------------------------------------------------------------------
    def posterior_params(self, image_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """mu and log-variance: (W,) each (unconditional), or (B, W) from the (B, D) image features."""
        if not self.conditional_text:
            return self.mu, self.log_var
        if image_features is None:
            raise ValueError("The conditional posterior depends on the image: pass image_features (B, D).")
        return self.posterior(image_features.to(self.context.ctx.dtype))

    def noise(self, *shape: int) -> Tensor:
        """Standard normal eps of ``shape``, drawn on the CPU (the same numbers on any device): from
        (``train_seed``, step) while training, from ``eval_seed`` otherwise."""
        if self.training:
            seed = (self.cfg.train_seed + self._step * _STEP_MIX) % 2**63
        else:
            seed = self.cfg.eval_seed
        eps = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        device = self.context.ctx.device
        if device.type == "cuda":  # pinned: the copy does not wait for the device
            eps = eps.pin_memory()
        return eps.to(device, non_blocking=True)

    def encode_samples(self, classes: ClassSet, eps: Tensor, image_features: Tensor | None = None) -> Tensor:
        """Class features of the sampled prompts for noise ``eps``: (L, W) -> (L, C, D) (unconditional), or
        (B, L, W) with (B, D) image features -> (B, L, C, D) (conditional)."""
        self.check_classes(classes)
        mu, log_var = self.posterior_params(image_features)  # (W,) or (B, W)
        z = mu.unsqueeze(-2) + eps * torch.exp(0.5 * log_var).unsqueeze(-2)  # (L, W) or (B, L, W)
        ctx = self.context.ctx + z.unsqueeze(-2)  # (L, M, W) or (B, L, M, W): one z_l for the M tokens
        features = self.encode_contexts(ctx.reshape(-1, *ctx.shape[-2:]), classes)  # (N, C, D)
        return features.view(*z.shape[:-1], len(classes), features.shape[-1])  # (L, C, D) or (B, L, C, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        """(L, C, D) class features of the L sampled prompts (unconditional), or (B, L, C, D) per image
        (conditional: per-image noise while training, the L evaluation samples shared by all images otherwise)."""
        width = self.context.ctx.shape[-1]
        if not self.conditional_text:
            return self.encode_samples(classes, self.noise(self.n_samples, width))  # (L, C, D)
        if image_features is None:
            raise ValueError("The conditional posterior depends on the image: pass image_features (B, D).")
        batch = image_features.shape[0]
        if self.training:
            eps = self.noise(batch, self.n_samples, width)  # (B, L, W)
        else:
            eps = self.noise(self.n_samples, width).expand(batch, -1, -1)  # (B, L, W)
        return self.encode_samples(classes, eps, image_features)  # (B, L, C, D)

    # -- the text tower --------------------------------------------------------------------------------------
    def encode_contexts(self, ctx: Tensor, classes: ClassSet) -> Tensor:
        """(N, M, W) contexts -> (N, C, D), at most ``max_chunk_prompts`` prompts per text-tower call; while
        training with several chunks, each runs under activation checkpointing (the same gradients)."""
        return self.class_prompts.features_in_chunks(classes, ctx, self.cfg.max_chunk_prompts // max(1, len(classes)),
                                                     self.cfg.activation_checkpointing)  # (N, C, D)

    # -- scores and loss ---------------------------------------------------------------------------------------
    def sample_log_probs(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(B, D) x (L, C, D) or (B, L, C, D) -> (L, B, C) log p_l(c|x) = log_softmax_c(s cos (+ bias))."""
        if text_features.dim() == 4:
            cos = torch.einsum("bd,blcd->lbc", image_features, text_features)  # (L, B, C)
        else:
            cos = torch.einsum("bd,lcd->lbc", image_features, text_features)  # (L, B, C)
        scores = self.backbone.logit_scale * cos.float()
        bias = self.backbone.logit_bias
        return F.log_softmax(scores if bias is None else scores + bias, dim=-1)  # (L, B, C)

    def logits(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(B, C) log((1/L) sum_l p_l(c|x)): log-probabilities (``logits_are_log_probs``)."""
        return mc_average(self.sample_log_probs(image_features, text_features))

    def forward_features(self, image_features: Tensor, classes: ClassSet,
                         text_features: Tensor | None = None) -> MethodOutput:
        """The MC-averaged log-probabilities; ``extras["sample_log_probs"]`` (L, B, C) is what :meth:`loss` reads."""
        if text_features is None:
            text_features = self.encode_classes(classes, image_features)  # (L, C, D) or (B, L, C, D)
        log_probs = self.sample_log_probs(image_features, text_features)  # (L, B, C)
        return MethodOutput(mc_average(log_probs), image_features, text_features, classes,
                            {"sample_log_probs": log_probs})

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """{"mc_nll": -mean_b[logsumexp_l log p_l(y_b|x_b) - log L], "kl": kl_weight * KL}; ends a training step
        (the next forward draws new training noise)."""
        mu, log_var = self.posterior_params(out.image_features)
        losses = {"mc_nll": -mc_log_likelihood(out.extras["sample_log_probs"], labels).mean(),
                  "kl": self.cfg.kl_weight * gaussian_kl(mu, log_var)}
        self._step += 1
        return losses

    def text_prompt_tensors(self) -> dict[str, Tensor]:
        ctx = self.context.ctx.detach()  # (M, W)
        if self.conditional_text:
            return {"context": ctx}
        return {"context": ctx, "posterior_mean_context": ctx + self.mu.detach()}  # ctx + mu
