"""UPL: Unsupervised Prompt Learning (Huang et al., "Unsupervised Prompt Learning for Vision-Language Models",
2022; docs/methods/upl.md).

No label is read. Stages:

1. ``prepare`` (pseudo-labels): for every unlabeled training image x, with the eval transform of each backbone b
   and the dataset's hand-written template, p_b(x) = softmax(s_b * norm(f_b(x)) @ norm(w_b)^T) over the training
   classes; p(x) = mean over b of p_b(x): the run's backbone plus ``pseudo_label_backbones`` (UPL*).
   c(x) = argmax p(x). For each class c, the K images predicted as c with the highest max p(x) are kept,
   labelled c (K = ``top_k``, or the run's ``shots``); a class predicted for fewer images keeps all of them, and one
   predicted for none has no training image. The selection replaces the training set.
2. fit: CoOp (Eq. 2-3 of CoOp; :class:`~prompt_learning.methods.coop.CoOp`) with cross-entropy on the
   pseudo-labels: M = 16 context vectors, N(0, 0.02^2), class token at the end.

The engine scores the pseudo-labels against the held-back truth (results.json ``prepare.assigned_labels``).
UPL's reported number is the test accuracy of an ensemble of 16 seeds (``scripts/ensemble.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.data.types import Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods.base import register_method
from prompt_learning.methods.coop import CoOp, CoOpConfig
from prompt_learning.methods.stages import StageData
from prompt_learning.validation import Rule, integer, list_of


def _backbone_entry(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("model"), str) and bool(value["model"]) \
        and set(value) <= {"model", "pretrained", "quick_gelu"}


BACKBONE_LIST = list_of(Rule(_backbone_entry, "a mapping {model: <open_clip name>, pretrained: <tag or checkpoint "
                                              "path>} (quick_gelu optional)"))


@dataclass
class UPLConfig(CoOpConfig):
    name: str = "upl"
    top_k: int = 0  # images kept per predicted class; 0: the run's shots (UPL's NUM_SHOTS, 16)
    # backbones whose zero-shot probabilities are averaged with the run's backbone's (UPL*); each
    # {model, pretrained[, quick_gelu]}; empty: the run's backbone alone (UPL)
    pseudo_label_backbones: list[dict[str, Any]] = field(default_factory=list)

    RULES: ClassVar[dict[str, Rule]] = {**CoOpConfig.RULES, "top_k": integer(0, meaning="0: the run's shots"),
                                        "pseudo_label_backbones": BACKBONE_LIST}


@torch.no_grad()
def zero_shot_probabilities(backbone: FrozenCLIP, batches: Any, classes: ClassSet, device: torch.device) -> Tensor:
    """(N, C) softmax(s * norm(f(x)) @ norm(w)^T) of every batch, w from the dataset's template alone."""
    text = backbone.zero_shot_text_features(classes.names, [classes.template])  # (C, D), normalised
    probs = []
    for images, _ in batches:
        features = F.normalize(backbone.encode_image(images.to(device)).float(), dim=-1)  # (B, D)
        probs.append(torch.softmax(backbone.logit_scale * features @ text.T, dim=-1).cpu())  # (B, C)
    return torch.cat(probs)


def top_k_per_class(probs: Tensor, k: int) -> list[tuple[int, int]]:
    """(image index, pseudo-label) pairs: for each class c, the ``k`` images predicted as c with the highest
    confidence max_c p (ties: the earlier image first); fewer when fewer images are predicted as c. ``probs``:
    (N, C). Pairs are ordered by class, then by confidence."""
    confidence, predicted = probs.max(dim=1)  # (N,), (N,)
    chosen = []
    for c in range(probs.shape[1]):
        members = torch.nonzero(predicted == c).flatten()  # (n_c,) in image order
        order = torch.sort(confidence[members], descending=True, stable=True).indices[:k]
        chosen += [(int(i), c) for i in members[order]]
    return chosen


@register_method
class UPL(CoOp):
    """CoOp's context, trained on pseudo-labels chosen by zero-shot CLIP in ``prepare``."""

    name = "upl"
    Config = UPLConfig
    prepares = True
    reads_labels = False
    unlabeled_train = True

    def __init__(self, cfg: UPLConfig, backbone, classes: ClassSet) -> None:
        if cfg.class_specific:
            raise ConfigurationError("method=upl trains unified context (UPL's CSC=False); set "
                                     "method.class_specific=false.")
        super().__init__(cfg, backbone, classes)

    def labelling_backbones(self) -> list[FrozenCLIP]:
        """The run's backbone, then each of ``pseudo_label_backbones`` (built here, on the run's device)."""
        extra = [FrozenCLIP(e["model"], e.get("pretrained"), quick_gelu=e.get("quick_gelu"))
                 for e in self.cfg.pseudo_label_backbones]
        return [self.backbone, *extra]

    def prepare(self, data: StageData) -> dict[str, Any]:
        """Pseudo-label the training images and keep the top-K per predicted class (module docstring)."""
        k = self.cfg.top_k or data.shots
        if k < 1:
            raise ConfigurationError(f"method=upl keeps the top-K images per predicted class, K = method.top_k or "
                                     f"shots; both say 'all' (top_k={self.cfg.top_k}, shots={data.shots}). Set "
                                     f"shots=16 (UPL's setting) or method.top_k.")
        classes, items = data.train_classes, data.train_items()
        probs = torch.zeros(len(items), len(classes))  # (N, C)
        labelled_by = []
        for backbone in self.labelling_backbones():
            backbone.to(data.device)
            probs += zero_shot_probabilities(backbone, data.train_images(backbone.preprocess_eval), classes,
                                             data.device) / (1 + len(self.cfg.pseudo_label_backbones))
            labelled_by.append({k_: v for k_, v in backbone.identity().items()
                                if k_ in ("model_name", "pretrained", "checkpoint")})
        chosen = top_k_per_class(probs, k)
        data.replace_train([Datum(items[i].ref, c, classes.names[c]) for i, c in chosen])
        counts = torch.bincount(torch.tensor([c for _, c in chosen], dtype=torch.long), minlength=len(classes))
        return {"top_k": k, "unlabeled_images": len(items), "selected": len(chosen),
                "classes_without_images": [classes.names[c] for c in range(len(classes)) if counts[c] == 0],
                "mean_confidence": round(float(probs.max(1).values.mean()), 6), "backbones": labelled_by}
