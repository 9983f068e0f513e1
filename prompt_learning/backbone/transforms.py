"""Image transforms of a backbone. Evaluation uses open_clip's own eval preprocess; training adds
Dassl's augmentation (random resized crop + flip, as the CoOp-family trainers) or a light one, chosen per dataset with ``train_transform``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torchvision import transforms as T

from prompt_learning.errors import ConfigurationError

TRAIN_TRANSFORMS = ("random_resized_crop", "flip", "none")


def build_train_transform(kind: str, preprocess_cfg: dict[str, Any], eval_transform: Callable) -> Callable:
    """``random_resized_crop``: RandomResizedCrop(scale 0.08-1, bicubic) + flip + normalise (Dassl/CoOp);
    ``flip``: the eval preprocess with a horizontal flip first; ``none``: the eval preprocess."""
    size = preprocess_cfg["size"]
    normalize = T.Normalize(mean=preprocess_cfg["mean"], std=preprocess_cfg["std"])
    if kind == "random_resized_crop":
        return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                          T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    if kind == "flip":
        return T.Compose([T.RandomHorizontalFlip(), eval_transform])
    if kind == "none":
        return eval_transform
    raise ConfigurationError(f"dataset.train_transform={kind!r}; choose one of {TRAIN_TRANSFORMS}.")


INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def random_crop_view(preprocess_cfg: dict[str, Any], scale: tuple[float, float], interpolation: str = "bicubic",
                     normalize: bool = True) -> Callable:
    """RandomResizedCrop(size, ``scale``, ``interpolation``) + horizontal flip (+ ToTensor + normalise), at this
    model's resolution and normalisation: a method's own augmentation (Tip-Adapter: scale 0.5-1, bicubic;
    TPT's views: 0.08-1, bilinear). ``normalize=False`` stops at the flipped PIL image."""
    size = preprocess_cfg["size"]
    steps = [T.RandomResizedCrop(size, scale=scale, interpolation=INTERPOLATIONS[interpolation]),
             T.RandomHorizontalFlip()]
    if normalize:
        steps += [T.ToTensor(), T.Normalize(mean=preprocess_cfg["mean"], std=preprocess_cfg["std"])]
    return T.Compose(steps)
