"""PromptedCLIP: a learned prompt on its frozen backbone, for inference anywhere.

Loading needs only torch, open_clip, safetensors and this package's library code (no Lightning, no
Hydra)::

    model = PromptedCLIP.from_pretrained("outputs/.../export")      # or "hf-hub:<owner>/<name>"
    pred = model.predict(images, ["golden retriever", "tabby cat"], top_k=1)
    model.save_pretrained("my_prompts")                              # the same three files as a run's export
    model.push_to_hub("<owner>/<name>")                              # needs a Hugging Face token

``images`` are PIL images (preprocessed with the export's own backbone transform) or an already
preprocessed (B, 3, H, W) tensor. An export trained on a local checkpoint file needs that file:
``from_pretrained(export, backbone="/path/to/ckpt.pt")`` (checked against the export's sha256).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.errors import DataError
from prompt_learning.export.io import (
    export_config,
    export_dir,
    load_method,
    push_to_hub,
    read_export,
    write_export,
)
from prompt_learning.formats import image_to_rgb
from prompt_learning.methods.base import PromptMethod
from prompt_learning.methods.stages import adapted_logits


@dataclass
class Prediction:
    probs: Tensor  # (B, C) softmax over the given classes
    top_indices: Tensor  # (B, k)
    top_probs: Tensor  # (B, k)
    top_labels: list[list[str]]  # B lists of k class names


class PromptedCLIP:
    def __init__(self, method: PromptMethod, template: str, dataset: str | None = None,
                 config: dict[str, Any] | None = None) -> None:
        """``config``: the ``prompt_config.json`` it was loaded from; its provenance (training summary,
        command, test results, package version, commit) is kept by ``save_pretrained``."""
        self.method = method.eval()
        self.backbone: FrozenCLIP = method.backbone
        self.template, self.dataset = template, dataset
        self.config: dict[str, Any] = dict(config or {})
        self._class_cache: dict[tuple[str, ...], Tensor] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, backbone: FrozenCLIP | str | Path | None = None,
                        device: str | torch.device | None = None, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | bool | None = None) -> PromptedCLIP:
        """Rebuild an exported prompt.

        Args:
            path: an export directory (or one of its files), or ``hf-hub:<owner>/<name>[@revision]``: a
                hub repository, fetched through the Hugging Face cache (offline with ``HF_HUB_OFFLINE=1``
                when cached; ``revision``, ``cache_dir`` and ``token`` are handed to the download).
            backbone: None for the backbone the export names (an open_clip tag, the packaged tiny CLIP or
                random weights); the path of the export's checkpoint file on this machine, checked against
                the export's sha256; or a ``FrozenCLIP``, checked against the export's identity.
            device: where to move the model.
        """
        directory = export_dir(path, revision, cache_dir, token)
        config = read_export(directory)
        method = load_method(directory, backbone)
        if device is not None:
            method.backbone.to(device)
            method.to(device)
        return cls(method, config["template"], config.get("dataset"), config)

    def export_config(self) -> dict[str, Any]:
        """``prompt_config.json`` of this model: method, backbone and classes as they are now, provenance
        (training summary and command, test results, version, commit) as loaded."""
        config = export_config(self.method, self.config.get("training"), self.config.get("results"))
        for key in ("package_version", "git_commit"):
            if key in self.config:
                config[key] = self.config[key]
        return config

    def save_pretrained(self, directory: str | Path, repo_id: str | None = None) -> Path:
        """Write ``prompts.safetensors``, ``prompt_config.json`` and the ``README.md`` model card into
        ``directory`` (each file atomically), loadable with ``from_pretrained(directory)``."""
        return write_export(Path(directory).expanduser(), self.method.export_tensors(), self.export_config(), repo_id)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str | None = None, revision: str | None = None) -> str:
        """Upload the export (``save_pretrained``'s files) to the hub model repository ``repo_id``, created
        if needed; ``from_pretrained("hf-hub:<repo_id>")`` loads it. Returns the commit URL."""
        with tempfile.TemporaryDirectory(prefix="prompt-export-") as staging:
            self.save_pretrained(staging, repo_id)
            return push_to_hub(staging, repo_id, private=private, token=token, commit_message=commit_message,
                               revision=revision)

    @property
    def preprocess(self):
        return self.backbone.preprocess_eval

    @property
    def trained_classnames(self) -> tuple[str, ...]:
        return self.method.train_classes.names

    def classes(self, classnames: Sequence[str]) -> ClassSet:
        return ClassSet(tuple(classnames), self.template, self.dataset)

    def _images(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        if len(images) == 0:
            raise DataError("No images to classify: the image list is empty. Pass at least one image.")
        if isinstance(images, Tensor):
            return images.to(self.backbone.device)
        rgb = [image_to_rgb(image, f"images[{i}]") for i, image in enumerate(images)]  # 16-bit, alpha: faithfully
        return torch.stack([self.preprocess(image) for image in rgb]).to(self.backbone.device)  # (B, 3, H, W)

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
        """(B, C) logits of ``images`` over ``classnames``; a test-time-adaptive method (TPT) adapts to each
        image first, on augmented views of it (``adapted_logits``)."""
        if self.method.test_time_adaptive:
            return self._adapted_logits(images, classnames)
        pixels = self._images(images)
        cached = None if self.method.conditional_text else self.encode_classes(classnames)
        return self.method(pixels, self.classes(classnames), cached).logits

    def _adapted_logits(self, images: Tensor | Sequence[Image.Image], classnames: Sequence[str]) -> Tensor:
        """Per image: the eval view and ``test_views`` views of the decoded image through the method's own
        augmentation (drawn from a generator seeded by the image's position: the same call, the same views)."""
        if isinstance(images, Tensor):
            raise DataError(f"Method {self.method.name!r} adapts to each image on augmented views of the decoded "
                            f"image: pass PIL images, not a preprocessed tensor.")
        if len(images) == 0:
            raise DataError("No images to classify: the image list is empty. Pass at least one image.")
        classes = self.classes(classnames)
        augment = self.method.augmentation(self.backbone.train_transform(), classes)
        rows = []
        for i, image in enumerate(images):
            rgb = image_to_rgb(image, f"images[{i}]")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(i)
                views = [self.preprocess(rgb), *(augment(rgb) for _ in range(self.method.test_views))]
            rows.append(adapted_logits(self.method, torch.stack(views).to(self.backbone.device), classes))  # (1, C)
        self.method.reset()  # back to the exported prompt
        return torch.cat(rows)  # (B, C)

    def predict(self, images: Tensor | Sequence[Image.Image], classnames: Sequence[str], top_k: int = 5) -> Prediction:
        probs = self.logits(images, classnames).float().softmax(-1)  # (B, C)
        top_probs, top_indices = probs.topk(min(top_k, len(classnames)), dim=-1)  # (B, k)
        labels = [[classnames[i] for i in row] for row in top_indices.tolist()]
        return Prediction(probs, top_indices, top_probs, labels)
