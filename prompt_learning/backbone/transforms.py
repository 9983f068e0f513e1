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
