"""PromptedCLIP: a learned prompt on its frozen backbone, for inference anywhere.

Loading needs only torch, open_clip, safetensors and this package's library code (no Lightning, no
Hydra)::

    model = PromptedCLIP.from_pretrained("outputs/.../export")
    pred = model.predict(images, ["golden retriever", "tabby cat"], top_k=1)

``images`` are PIL images (preprocessed with the export's own backbone transform) or an already
preprocessed (B, 3, H, W) tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.export.io import load_method, read_export
from prompt_learning.methods.base import PromptMethod


@dataclass
class Prediction:
    probs: Tensor  # (B, C) softmax over the given classes
    top_indices: Tensor  # (B, k)
    top_probs: Tensor  # (B, k)
    top_labels: list[list[str]]  # B lists of k class names


def export_dir(path: str | Path) -> Path:
    """An export directory from the directory itself or one of its two files."""
    path = Path(path).expanduser()
    return path.parent if path.is_file() else path


class PromptedCLIP:
    def __init__(self, method: PromptMethod, template: str, dataset: str | None = None) -> None:
        self.method = method.eval()
        self.backbone: FrozenCLIP = method.backbone
        self.template, self.dataset = template, dataset
        self._class_cache: dict[tuple[str, ...], Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, backbone: FrozenCLIP | None = None,
                        device: str | torch.device | None = None) -> PromptedCLIP:
        """Rebuild the exported method on ``backbone`` (default: the backbone the export names)."""
        directory = export_dir(path)
        config = read_export(directory)
        method = load_method(directory, backbone)
        if device is not None:
            method.backbone.to(device)
            method.to(device)
        return cls(method, config["template"], config.get("dataset"))

    @property
    def preprocess(self):
        return self.backbone.preprocess_eval

    @property
    def trained_classnames(self) -> tuple[str, ...]:
        return self.method.train_classes.names

    def classes(self, classnames: Sequence[str]) -> ClassSet:
        return ClassSet(tuple(classnames), self.template, self.dataset)

    def _images(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        if isinstance(images, Tensor):
            return images.to(self.backbone.device)
        return torch.stack([self.preprocess(image) for image in images]).to(self.backbone.device)  # (B, 3, H, W)

    @torch.no_grad()
    def encode_classes(self, classnames: Sequence[str]) -> Tensor:
        """(C, D) normalised class features (methods whose class features do not depend on the image)."""
        if self.method.conditional_text:
            raise ValueError(f"method {self.method.name!r} conditions class features on each image; use logits().")
        key = tuple(classnames)
        if key not in self._class_cache:
            self._class_cache[key] = self.method.encode_classes(self.classes(classnames))
        return self._class_cache[key]

    @torch.no_grad()
    def logits(self, images: Tensor | Sequence[Image.Image], classnames: Sequence[str]) -> Tensor:
        """(B, C) logits of ``images`` over ``classnames``."""
        pixels = self._images(images)
        cached = None if self.method.conditional_text else self.encode_classes(classnames)
        return self.method(pixels, self.classes(classnames), cached).logits

    def predict(self, images: Tensor | Sequence[Image.Image], classnames: Sequence[str], top_k: int = 5) -> Prediction:
        probs = self.logits(images, classnames).float().softmax(-1)  # (B, C)
        top_probs, top_indices = probs.topk(min(top_k, len(classnames)), dim=-1)  # (B, k)
        labels = [[classnames[i] for i in row] for row in top_indices.tolist()]
        return Prediction(probs, top_indices, top_probs, labels)
