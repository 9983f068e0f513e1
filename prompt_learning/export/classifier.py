"""A standalone classifier head: the (C, D) normalised class-feature matrix of a learned prompt.

For methods whose class features depend neither on the image (CoCoOp) nor on a prompted image tower
(VPT, IVLP, MaPLe, PromptSRC), the learned prompt reduces to one matrix W: logits =
logit_scale * norm(f(x)) @ W^T (+ logit_bias), with f the plain open_clip ``encode_image``. The file is
safetensors with tensors ``text_features`` (C, D), ``logit_scale`` () and optionally ``logit_bias`` (),
and metadata ``classnames`` (JSON list), ``model_name``, ``pretrained``, ``method``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save

from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.files import atomic_write_bytes
from prompt_learning.methods.base import PromptMethod


def classifier_problem(method: PromptMethod) -> str | None:
    """Why ``method`` has no image-independent classifier head (None if it has one)."""
    if method.conditional_text:
        return f"method {method.name!r} builds class features from each image (image-conditioned text)"
    if type(method).logits is not PromptMethod.logits:
        return f"method {method.name!r} scores classes with its own head, not by cosine to class features"
    if method.touches_image_tower:
        return (f"method {method.name!r} prompts the image tower, so plain open_clip encode_image features do not "
                f"match what its classes were learned against")
    return None


@torch.no_grad()
def export_classifier(method: PromptMethod, classnames: Sequence[str], path: str | Path,
                      template: str | None = None) -> Path:
    """Write the head of ``method`` for ``classnames`` to ``path`` (safetensors)."""
    problem = classifier_problem(method)
    if problem:
        raise ConfigurationError(f"No standalone classifier head: {problem}. Use PromptedCLIP for inference instead.")
    classes = ClassSet(tuple(classnames), template or method.train_classes.template)
    features = method.encode_classes(classes).float().contiguous().cpu()  # (C, D)
    tensors = {"text_features": features, "logit_scale": method.backbone.logit_scale.float().reshape(()).cpu()}
    if method.backbone.logit_bias is not None:
        tensors["logit_bias"] = method.backbone.logit_bias.float().reshape(()).cpu()
    identity = method.backbone.identity()
    metadata = {"classnames": json.dumps(list(classnames)), "model_name": str(identity["model_name"]),
                "pretrained": str(identity.get("pretrained")), "method": method.name}
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path
