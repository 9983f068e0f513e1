"""GOPro: Generate and Optimize Prompts (Singha et al., "GOPro: Generate and Optimize Prompts in CLIP using
Self-Supervised Learning", BMVC 2023; docs/methods/gopro.md).

A CoCoOp-style image-conditioned prompt whose shift comes from every frozen vision block:

* t_c(x) = g([SOS, ctx_1 + v(x), ..., ctx_4 + v(x), class_c, ".", EOS]), ctx from "a photo of a"; v(x) is
  ``prompts.style_content.StyleContentShift`` of the token statistics (mu_l, sigma_l) of each vision block's
  output h_l(x), read in the same pass as the image feature f(x) (``FrozenCLIP.encode_image_with_hidden_states``);
* logits(x) = s * norm(f(x))^T norm(t_c(x)): class features (B, C, D), like CoCoOp (its chunked Tier-C encoding);
* three views of each decoded training image (:class:`GOProViews`, ``augmentation``): x (the run's augmentation),
  x_m (MoCo-v3's augmentation, :func:`moco_view`) and x_a (AugMix, ``data.augmix``), a (B, 3, 3, H, W) batch;
* L = CE(logits(x), y) + MSE(T(x), T(x_m)) + MSE(T(x), T(x_a)) + 0.1 * L_SimCLR(P f(x), P f(x_m); tau 0.1), where
  T(x) = [norm(t_c(x))]_c (B, C, D), MSE the element mean and P = Linear(D, D) -> BatchNorm1d(D)
  (:class:`SimilarityProjector`; its BN statistics follow the method's train/eval mode and are exported).

Evaluation scores the single eval view. Departures (docs/methods/gopro.md): the views are made from the decoded
image (the official code re-augments the normalised batch, and its AugMix returns views of the batch's first
image only), the MoCo view is normalised with the backbone's mean/std (official: ImageNet's), the unused
meta-net is left out, the similarity projector is trained (the official ``name_to_update`` filter misses it), and
the last epoch is kept (the official ``after_epoch`` keeps the best epoch on the test set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torch import Tensor, nn
from torchvision import transforms as T

from prompt_learning.classes import ClassSet
from prompt_learning.data.augmix import TPTViews
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import MethodOutput, register_method
from prompt_learning.methods.cocoop import CoCoOp, check_image_conditioned_context
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.prompts.style_content import StyleContentShift, token_statistics
from prompt_learning.validation import Rule, number

VIEWS = ("x", "moco", "augmix")  # the order of the views in a training sample (3, 3, H, W)


@dataclass
class GOProConfig(CoOpConfig):
    name: str = "gopro"
    n_ctx: int = 4
    ctx_init: str = "a photo of a"
    consistency_weight: float = 1.0  # each MSE(T(x), T(view)) term (official: 1, hard-coded)
    simclr_weight: float = 0.1  # the SimCLR term (official: 0.1, hard-coded)
    temperature: float = 0.1  # SimCLR's tau
    images_per_chunk: int | None = None  # views whose C prompts are encoded together; None: from the budget
    max_chunk_prompts: int = 4096  # budget for images_per_chunk=None: chunk = max(1, this // C) views
    activation_checkpointing: bool = True  # with several chunks, keep training memory at one chunk's prompts

    RULES: ClassVar[dict[str, Rule]] = {"consistency_weight": number(0), "simclr_weight": number(0),
                                        "temperature": number(above=0)}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_image_conditioned_context(self)


# -- views ---------------------------------------------------------------------------------------------------
class RandomGaussianBlur:
    """MoCo-v3's blur: PIL's GaussianBlur with radius sigma ~ U(low, high), drawn from torch's generator (which
    ``ImageDataset`` seeds per sample)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, image: Image.Image) -> Image.Image:
        low, high = self.sigma
        return image.filter(ImageFilter.GaussianBlur(radius=low + (high - low) * float(torch.rand(()))))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def moco_view(preprocess_cfg: dict[str, Any]) -> Callable[[Image.Image], Tensor]:
    """x_m: RandomResizedCrop(0.08-1) -> ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 -> grayscale p 0.2 -> blur
    sigma in [0.1, 2] (always) -> flip -> ToTensor -> normalise with the backbone's mean/std."""
    return T.Compose([
        T.RandomResizedCrop(preprocess_cfg["size"], scale=(0.08, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        RandomGaussianBlur((0.1, 2.0)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean=preprocess_cfg["mean"], std=preprocess_cfg["std"]),
    ])


class GOProViews:
    """A decoded training image -> (3, 3, H, W): [x, x_m, x_a], each made from the image itself and normalised once."""

    def __init__(self, default: Callable, preprocess_cfg: dict[str, Any]) -> None:
        self.transforms = (default, moco_view(preprocess_cfg), TPTViews(preprocess_cfg, augmix=True))

    def __call__(self, image: Image.Image) -> Tensor:
        return torch.stack([t(image) for t in self.transforms])  # (3, 3, H, W)


# -- the self-supervised terms ----------------------------------------------------------------------------------
class SimilarityProjector(nn.Module):
    """P: (B, D) -> (B, D), Linear(D, D) -> BatchNorm1d(D) (the official ``sim_projector``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, features: Tensor) -> Tensor:
        return self.norm(self.linear(features))  # (B, D)


def simclr_loss(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Symmetric SimCLR on (B, D) x (B, D): for sample i of view a, the positive is b_i, the negatives the other
    samples of both views (a_i itself masked with -1e9); the same from view b; the mean of the two cross-entropies."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)  # (B, D)
    labels = torch.arange(a.shape[0], device=a.device)  # (B,)
    self_mask = torch.eye(a.shape[0], device=a.device) * 1e9  # (B, B)
    logits_ab, logits_ba = a @ b.T / temperature, b @ a.T / temperature  # (B, B)
    logits_aa, logits_bb = a @ a.T / temperature - self_mask, b @ b.T / temperature - self_mask  # (B, B)
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)  # over (B, 2B)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return (loss_a + loss_b) / 2


@register_method
class GOPro(CoOp):
    """Context ``context`` (M, W_t), the prompt generator ``shift`` and the similarity projector ``sim_projector``."""

    name = "gopro"
    Config = GOProConfig
    conditional_text = True
    reads_hidden_states = True  # scored from images (the blocks' statistics), never from cached features
    not_exported = ("sim_projector.norm.num_batches_tracked",)  # an integer step count, not a learned value
    # CoCoOp's encoding of per-image contexts: B*C prompts per text-tower call, each image's prefix once (Tier C)
    images_per_chunk = CoCoOp.images_per_chunk

    def __init__(self, cfg: GOProConfig, backbone, classes: ClassSet) -> None:
        super().__init__(cfg, backbone, classes)
        vision = self.require_vision()
        self.shift = StyleContentShift(vision.depth, vision.width, backbone.text_width)
        self.sim_projector = SimilarityProjector(backbone.embed_dim)

    def augmentation(self, default: Callable, classes: ClassSet) -> Callable:
        """Training samples of three views (:class:`GOProViews`): the run's augmentation, MoCo-v3's, AugMix."""
        return GOProViews(default, self.backbone.preprocess_cfg)

    # -- forward ---------------------------------------------------------------------------------------------
    def encode_contexts(self, ctx: Tensor, classes: ClassSet) -> Tensor:
        """(N, M, W) one context per image -> (N, C, D) normalised class features, in chunks of images
        (activation checkpointing with several chunks while gradients are on, as CoCoOp)."""
        self.check_classes(classes)
        return self.class_prompts.features_in_chunks(classes, ctx, self.images_per_chunk(len(classes)),
                                                     self.cfg.activation_checkpointing)  # (N, C, D)

    def encode_classes(self, classes: ClassSet, image_features: Tensor | None = None) -> Tensor:
        raise ValueError("GOPro's class features depend on every vision block of the image, not on its feature "
                         "alone: call the method on images (forward).")

    def forward(self, images: Tensor, classes: ClassSet, text_features: Tensor | None = None) -> MethodOutput:
        """(B, 3, H, W) -> logits over ``classes``; (B, 3, 3, H, W) training samples [x, x_m, x_a] -> the logits of
        x and, in ``extras``, what ``loss`` needs: T(x_m), T(x_a) and P f(x), P f(x_m). In training mode a single
        view stands for all three (the consistency terms are then 0). ``text_features`` is not used (per image)."""
        views = images.shape[1] if images.dim() == 5 else 1
        batch = images.shape[0]
        flat = images.transpose(0, 1).flatten(0, 1) if views > 1 else images  # (V*B, 3, H, W), view-major
        with torch.no_grad():  # the frozen tower: its feature and per-block statistics, one pass
            features, statistics = self.backbone.encode_image_with_hidden_states(flat, token_statistics)
        image_features = F.normalize(features.float(), dim=-1)  # (V*B, D)
        shift = self.shift(statistics)  # (V*B, W)
        ctx = self.context.ctx.unsqueeze(0) + shift.unsqueeze(1)  # (V*B, M, W)
        text = self.encode_contexts(ctx, classes)  # (V*B, C, D)
        out = MethodOutput(self.logits(image_features[:batch], text[:batch]), image_features[:batch], text[:batch],
                           classes)
        if views == 1 and not (self.training and torch.is_grad_enabled()):
            return out
        if views not in (1, len(VIEWS)):
            raise ValueError(f"GOPro trains on {len(VIEWS)} views per image {VIEWS}, got {views}.")
        if batch < 2 and self.sim_projector.training:
            raise ConfigurationError("GOPro's similarity projector normalises a training batch (BatchNorm): it needs "
                                     "at least 2 images per batch on each process (data.batch_size >= 2; under "
                                     "DDP that is each process's batch).")
        text = text.view(views, batch, *text.shape[1:])  # (V, B, C, D)
        moco = image_features[batch: 2 * batch] if views > 1 else image_features[:batch]  # (B, D)
        out.extras["view_text_features"] = text[1:] if views > 1 else text[:1].expand(2, -1, -1, -1)  # (2, B, C, D)
        # two calls, as the official code: each view normalised by its own batch statistics
        out.extras["projected"] = torch.stack([self.sim_projector(image_features[:batch]),
                                               self.sim_projector(moco)])  # (2, B, D)
        return out

    def loss(self, out: MethodOutput, labels: Tensor) -> dict[str, Tensor]:
        """CE on x + consistency_weight * (MSE to x_m's and x_a's class features) + simclr_weight * SimCLR."""
        if "view_text_features" not in out.extras:
            raise ValueError("GOPro's loss needs the output of a training-mode forward (method.train()).")
        moco_text, augmix_text = out.extras["view_text_features"]  # (B, C, D) each
        projected_x, projected_moco = out.extras["projected"]  # (B, D) each
        weight = self.cfg.consistency_weight
        return {"ce": F.cross_entropy(out.logits, labels),
                "consistency_moco": weight * F.mse_loss(out.text_features, moco_text),
                "consistency_augmix": weight * F.mse_loss(out.text_features, augmix_text),
                "simclr": self.cfg.simclr_weight * simclr_loss(projected_x, projected_moco, self.cfg.temperature)}
