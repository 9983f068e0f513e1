"""UPL against independent computations: the zero-shot probabilities (one backbone and the UPL* mean over
several), the top-K selection per predicted class (classes predicted too rarely, or never), what prepare hands
the training, and its config errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.data.types import Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.methods import create_method
from prompt_learning.methods.upl import top_k_per_class, zero_shot_probabilities
from prompt_learning.protocols.unlabeled import UNLABELED

from ..conftest import CLASSES


class Unlabeled:
    """A StageData of 12 unlabeled images (label UNLABELED), the transform each backbone asks for recorded."""

    def __init__(self, size: int, shots: int = 2) -> None:
        self.images = torch.randn(12, 3, size, size, generator=torch.Generator().manual_seed(5))  # (N, 3, H, W)
        self.items = [Datum(f"img{i}", UNLABELED, "") for i in range(12)]
        self.train_classes, self.device, self.shots = CLASSES, torch.device("cpu"), shots
        self.replaced: list[Datum] | None = None

    def train_items(self):
        return list(self.items)

    def train_images(self, transform):
        return [(self.images[:5], torch.full((5,), UNLABELED)), (self.images[5:], torch.full((7,), UNLABELED))]

    def replace_train(self, items) -> None:
        self.replaced = list(items)


def reference_top_k(probs: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """Plain loops: per class, images whose argmax is it, sorted by (-confidence, index), first k."""
    out = []
    for c in range(probs.shape[1]):
        members = [(-float(probs[i].max()), i) for i in range(probs.shape[0]) if int(probs[i].argmax()) == c]
        out += [(i, c) for _, i in sorted(members)[:k]]
    return out


def test_top_k_per_class_matches_loops_including_rare_and_absent_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=gen)
    logits[:, 4] -= 10  # class 4 is never predicted
    logits[:3, 3] += 10  # class 3 is predicted for (at least) 3 images only
    logits[3:, 3] -= 10
    probs = logits.softmax(-1)
    chosen = top_k_per_class(probs, 4)
    assert chosen == reference_top_k(probs, 4)
    per_class = torch.bincount(torch.tensor([c for _, c in chosen]), minlength=5)
    assert per_class[4] == 0 and per_class[3] == 3 and all(per_class[:3] == 4)


def test_ties_keep_the_earlier_image() -> None:
    probs = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.9, 0.1], [0.6, 0.4]])
    assert top_k_per_class(probs, 2) == [(2, 0), (0, 0)]


def test_zero_shot_probabilities_are_the_template_softmax(tiny_backbone) -> None:
    data = Unlabeled(tiny_backbone.image_size)
    probs = zero_shot_probabilities(tiny_backbone, data.train_images(None), CLASSES, torch.device("cpu"))
    with torch.no_grad():
        text = F.normalize(tiny_backbone.encode_text([f"a photo of a {c}." for c in CLASSES.names]).float(), dim=-1)
        image = F.normalize(tiny_backbone.encode_image(data.images).float(), dim=-1)
    expected = (tiny_backbone.logit_scale * image @ text.T).softmax(-1)  # (N, C)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)


def test_prepare_trains_on_the_top_k_pseudo_labels(tiny_backbone) -> None:
    data = Unlabeled(tiny_backbone.image_size, shots=2)
    method = create_method({"name": "upl"}, tiny_backbone, CLASSES)
    summary = method.prepare(data)
    probs = zero_shot_probabilities(tiny_backbone, data.train_images(None), CLASSES, torch.device("cpu"))
    expected = [Datum(f"img{i}", c, CLASSES.names[c]) for i, c in reference_top_k(probs, 2)]
    assert data.replaced == expected
    assert summary["top_k"] == 2 and summary["selected"] == len(expected) and summary["unlabeled_images"] == 12
    assert method.context.ctx.shape == (16, tiny_backbone.text.width)  # CoOp M = 16, random init


def test_upl_star_averages_the_backbones_probabilities(tiny_backbone) -> None:
    torch.manual_seed(4)
    other = {"model": "tiny_test_eos", "pretrained": None}
    method = create_method({"name": "upl", "top_k": 3, "pseudo_label_backbones": [other]}, tiny_backbone, CLASSES)
    backbones = method.labelling_backbones()
    assert [b.model_name for b in backbones] == ["tiny_test", "tiny_test_eos"]
    data = Unlabeled(tiny_backbone.image_size)
    method.labelling_backbones = lambda: backbones  # the same random weights for prepare and the reference
    summary = method.prepare(data)
    mean = sum(zero_shot_probabilities(b, data.train_images(None), CLASSES, torch.device("cpu"))
               for b in backbones) / 2
    assert [(d.ref, d.label) for d in data.replaced] == [(f"img{i}", c) for i, c in reference_top_k(mean, 3)]
    assert [b["model_name"] for b in summary["backbones"]] == ["tiny_test", "tiny_test_eos"]


def test_pseudo_label_backbones_build_what_they_name(tiny_backbone) -> None:
    method = create_method({"name": "upl", "pseudo_label_backbones": [{"model": "tiny_test_eos"}]}, tiny_backbone,
                           CLASSES)
    built = method.labelling_backbones()
    assert built[0] is tiny_backbone and isinstance(built[1], FrozenCLIP) and built[1].model_name == "tiny_test_eos"


def test_k_must_be_a_number_of_images(tiny_backbone) -> None:
    method = create_method({"name": "upl"}, tiny_backbone, CLASSES)
    with pytest.raises(ConfigurationError, match="top-K"):
        method.prepare(Unlabeled(tiny_backbone.image_size, shots=-1))


def test_class_specific_context_is_refused(tiny_backbone) -> None:
    with pytest.raises(ConfigurationError, match="class_specific"):
        create_method({"name": "upl", "class_specific": True}, tiny_backbone, CLASSES)
