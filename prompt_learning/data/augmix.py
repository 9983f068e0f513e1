"""TPT's test-time views (Shu et al., NeurIPS 2022): a random crop, optionally AugMix-ed.

One view of a decoded RGB image x (``TPTViews.__call__``):

* ``x_orig = flip(RandomResizedCrop(x))``: scale 0.08-1, ratio 3/4-4/3, bilinear, at the model's size;
* ``x_processed = normalise(ToTensor(x_orig))``, the view when ``augmix=False`` (TPT's setting for
  the ImageNet family);
* with ``augmix=True``: ``w ~ Dirichlet(1, 1, 1)``, ``m ~ Beta(1, 1)``, and for each of the 3 chains
  ``chain_i = op_d(...op_1(x_orig))`` with depth d uniform in {1, 2, 3} and each op uniform over
  ``AUGMIX_OPS`` at severity 1; the view is
  ``m * x_processed + (1 - m) * sum_i w_i * normalise(ToTensor(chain_i))``.

Each op draws ``level ~ U(0.1, severity)`` per call and maps it as TPT's ``augmix_ops`` does:
posterize to ``4 - int(level * 4 / 10)`` bits, rotate by ``+-int(level * 30 / 10)`` degrees, solarize
at ``256 - int(level * 256 / 10)``, shear by ``+-level * 0.3 / 10`` and translate by
``+-int(level * (S / 3) / 10)`` pixels (S: the side of the view, 224 for ViT-B/16); autocontrast and
equalize take no level. torchvision's ``T.AugMix(all_ops=False)`` has the same ops but reads severity
as a number of magnitude bins: at severity 1 it only samples bin 0, i.e. no rotation, shear or
translation at all, so it is not used here.

Departure from the official code: every random draw (the crop and flip, w, m, the depths, the ops and
their levels and signs) comes from torch's global generator, not numpy's, so that ``MultiViewDataset``,
which seeds torch per image, makes each view reproducible. Translations use the view's own width and
height for S (the official code fixes S = 224); on a square view these are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision import transforms as T

from prompt_learning.backbone.transforms import random_crop_view

Op = Callable[[Image.Image, float], Image.Image]  # (image, severity) -> image of the same size


def _level(severity: float) -> float:
    """U(0.1, severity), from torch's generator."""
    return 0.1 + (severity - 0.1) * float(torch.rand(()))


def _random_sign(value: float) -> float:
    """``value`` negated with probability 1/2."""
    return -value if float(torch.rand(())) < 0.5 else value


def autocontrast(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.autocontrast(image)


def equalize(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.equalize(image)


def posterize(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.posterize(image, 4 - int(_level(severity) * 4 / 10))


def rotate(image: Image.Image, severity: float) -> Image.Image:
    degrees = _random_sign(int(_level(severity) * 30 / 10))
    return image.rotate(degrees, resample=Image.BILINEAR)


def solarize(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.solarize(image, 256 - int(_level(severity) * 256 / 10))


def _affine(image: Image.Image, coefficients: tuple[float, ...]) -> Image.Image:
    return image.transform(image.size, Image.AFFINE, coefficients, resample=Image.BILINEAR)


def shear_x(image: Image.Image, severity: float) -> Image.Image:
    return _affine(image, (1, _random_sign(_level(severity) * 0.3 / 10), 0, 0, 1, 0))


def shear_y(image: Image.Image, severity: float) -> Image.Image:
    return _affine(image, (1, 0, 0, _random_sign(_level(severity) * 0.3 / 10), 1, 0))


def translate_x(image: Image.Image, severity: float) -> Image.Image:
    shift = _random_sign(int(_level(severity) * (image.width / 3) / 10))
    return _affine(image, (1, 0, shift, 0, 1, 0))


def translate_y(image: Image.Image, severity: float) -> Image.Image:
    shift = _random_sign(int(_level(severity) * (image.height / 3) / 10))
    return _affine(image, (1, 0, 0, 0, 1, shift))


AUGMIX_OPS: tuple[Op, ...] = (autocontrast, equalize, posterize, rotate, solarize, shear_x, shear_y,
                              translate_x, translate_y)


class TPTViews:
    """One TPT view of a PIL RGB image per call, as a normalised (3, H, W) float32 tensor (module doc)."""

    chains, severity = 3, 1.0

    def __init__(self, preprocess_cfg: dict[str, Any], augmix: bool, ops: Sequence[Op] = AUGMIX_OPS) -> None:
        self.preaugment = random_crop_view(preprocess_cfg, scale=(0.08, 1.0), interpolation="bilinear",
                                           normalize=False)
        self.preprocess = T.Compose([T.ToTensor(), T.Normalize(mean=preprocess_cfg["mean"],
                                                               std=preprocess_cfg["std"])])
        self.augmix, self.ops = augmix, tuple(ops)

    def chain(self, image: Image.Image) -> Image.Image:
        """``op_d(...op_1(image))``: d uniform in {1, 2, 3}, each op uniform over ``self.ops``."""
        for _ in range(int(torch.randint(1, 4, ()))):
            image = self.ops[int(torch.randint(len(self.ops), ()))](image, self.severity)
        return image

    def __call__(self, image: Image.Image) -> Tensor:
        x_orig = self.preaugment(image)  # PIL, size x size
        x_processed = self.preprocess(x_orig)  # (3, H, W)
        if not self.augmix:
            return x_processed
        w = torch.distributions.Dirichlet(torch.ones(self.chains)).sample()  # (3,), sums to 1
        m = torch.distributions.Beta(1.0, 1.0).sample()  # ()
        mix = torch.zeros_like(x_processed)  # (3, H, W)
        for i in range(self.chains):
            mix += w[i] * self.preprocess(self.chain(x_orig))  # (3, H, W)
        return m * x_processed + (1 - m) * mix  # (3, H, W)
