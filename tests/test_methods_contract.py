"""Every method of list_methods() honours the interface contract (new methods join automatically)."""

from __future__ import annotations

import fnmatch

import pytest
import torch

from prompt_learning.data.types import Datum
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import load_method, save_export
from prompt_learning.methods import create_method, list_methods

from .conftest import CLASSES, UNSEEN, teacher_keys

METHODS = sorted(list_methods())


class InMemoryStageData:
    """``prepare``'s view of a tiny training set: 8 random images of the 4 classes (every pass the same)."""

    def __init__(self, backbone) -> None:
        size = backbone.image_size
        self.images = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(7))  # (N, 3, H, W)
        self.labels = torch.arange(8) % len(CLASSES)  # (N,)
        self.train_classes, self.device, self.shots = CLASSES, torch.device("cpu"), 2
        self.items = [Datum(f"image{i}", int(y), CLASSES.names[int(y)]) for i, y in enumerate(self.labels)]

    def train_items(self):
        return list(self.items)

    def train_loader(self, augment: bool = True):
        return [(self.images, self.labels)]

    def train_images(self, transform):
        return [(self.images, self.labels)]

    def replace_train(self, items) -> None:
        self.items = list(items)

    def augmented_pass(self, index: int):
        return [(self.images, self.labels)]

    def val_loader(self):
        return [(self.images, self.labels)]


TEACHER: dict[str, str] = {}  # a distilling method's teacher export (conftest's kd_teacher)


@pytest.fixture(autouse=True)
def _teacher(kd_teacher) -> None:
    TEACHER.update(kd_teacher)


def build(name: str, backbone, seed: int = 0):
    """The method as the engine hands it to training or evaluation: after ``prepare`` when it has one. A method
    with a ``teacher_export`` key gets the tiny teacher."""
    torch.manual_seed(seed)
    method = create_method({"name": name, **teacher_keys(name, TEACHER)}, backbone, CLASSES)
    if method.prepares:
        method.prepare(InMemoryStageData(backbone))
    return method


def bump(method) -> None:
    """Move learned tensors away from their init so that export round-trips are meaningful."""
    with torch.no_grad():
        for p in method.parameters():
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("name", METHODS)
def test_logits_shape_and_features(name, tiny_backbone, images) -> None:
    out = build(name, tiny_backbone)(images, CLASSES)
    assert out.logits.shape == (images.shape[0], len(CLASSES))
    assert torch.allclose(out.image_features.norm(dim=-1), torch.ones(images.shape[0]), atol=1e-5)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", METHODS)
def test_only_method_parameters_require_grad(name, tiny_backbone) -> None:
    method = build(name, tiny_backbone)
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    assert all(p.requires_grad for p in method.parameters())
    # tuned before the test (trainable) or during it (test-time adaptation): learned tensors are parameters
    assert (method.trainable or method.test_time_adaptive) == any(True for _ in method.parameters())


def step_loss(method, images) -> torch.Tensor:
    return sum(method.loss(method(images, CLASSES), torch.tensor([0, 1, 2])).values())


def effective_backbone(method) -> dict[str, torch.Tensor]:
    """The backbone's tensors as the method runs them: its trained copies (``unfreezes_backbone``) swapped in."""
    with method.overridden_backbone():
        return {k: v.detach().clone() for k, v in method.backbone.model.named_parameters()}


def allow_listed(method) -> set[str]:
    """The backbone tensors the method's allow-list names (fnmatch patterns), matched here independently."""
    names = [n for n, _ in method.backbone.model.named_parameters()]
    return {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in method.unfreezes_backbone)}


@pytest.mark.parametrize("name", [n for n in METHODS if list_methods()[n].trainable])
def test_optimizer_step_leaves_backbone_bitwise_unchanged(name, tiny_backbone, images) -> None:
    """The backbone object stays bitwise unchanged; every learned tensor gets a gradient unless this batch does not
    depend on it at all (an expert no image routed to): moving such a tensor leaves the loss as it was."""
    method = build(name, tiny_backbone)
    before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    learned = {k: v.clone() for k, v in method.state_dict().items()}
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    torch.manual_seed(5)
    loss = step_loss(method, images)
    loss.backward()
    method.after_backward()
    idle = [p for p in method.parameters() if p.grad is None]
    assert all(p.grad.abs().sum() > 0 for p in method.parameters() if p.grad is not None)
    assert len(idle) < len(list(method.parameters()))
    if idle:
        with torch.no_grad():
            for p in idle:
                p.add_(1.0)
            torch.manual_seed(5)
            torch.testing.assert_close(step_loss(method, images), loss.detach())
            for p in idle:
                p.sub_(1.0)
    assert all(p.grad is None for p in tiny_backbone.parameters())
    optimizer.step()
    for k, v in tiny_backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(not torch.equal(v, learned[k]) for k, v in method.state_dict().items())


@pytest.mark.parametrize("name", METHODS)
def test_effective_backbone_differs_only_in_the_allow_list(name, tiny_backbone, images) -> None:
    """Swapped in: exactly the allow-listed tensors (as copies, equal to the originals at init), nothing else; after
    a step only those changed, and the backbone object itself holds its original tensors again."""
    method = build(name, tiny_backbone)
    originals = dict(tiny_backbone.model.named_parameters())
    allowed = allow_listed(method)
    with method.overridden_backbone():
        swapped = {k for k, v in tiny_backbone.model.named_parameters() if v is not originals[k]}
    assert swapped == allowed
    assert all(v is originals[k] for k, v in tiny_backbone.model.named_parameters())
    assert all(torch.equal(v, originals[k]) for k, v in effective_backbone(method).items())
    if not method.trainable or not allowed:
        return
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    step_loss(method, images).backward()
    optimizer.step()
    changed = {k for k, v in effective_backbone(method).items() if not torch.equal(v, originals[k])}
    assert changed == allowed


@pytest.mark.parametrize("name", METHODS)
def test_export_reload_gives_identical_logits(name, tiny_backbone, images, tmp_path) -> None:
    method = build(name, tiny_backbone)
    bump(method)
    save_export(tmp_path, method, {"epochs": 0})
    reloaded = load_method(tmp_path, tiny_backbone)
    assert torch.equal(method(images, CLASSES).logits, reloaded(images, CLASSES).logits)
    if method.supports_unseen_classes:
        assert torch.equal(method(images, UNSEEN).logits, reloaded(images, UNSEEN).logits)


@pytest.mark.parametrize("name", METHODS)
def test_unseen_class_names(name, tiny_backbone, images) -> None:
    method = build(name, tiny_backbone)
    if method.supports_unseen_classes:
        assert method(images, UNSEEN).logits.shape == (images.shape[0], len(UNSEEN))
    else:
        with pytest.raises(ConfigurationError):
            method(images, UNSEEN)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_numbers(name, tiny_backbone, images) -> None:
    a, b = build(name, tiny_backbone, seed=3), build(name, tiny_backbone, seed=3)
    assert torch.equal(a(images, CLASSES).logits, b(images, CLASSES).logits)


@pytest.mark.parametrize("name", [n for n in METHODS if not list_methods()[n].conditional_text])
def test_cached_class_features_equal_per_batch_ones(name, tiny_backbone, images) -> None:
    method = build(name, tiny_backbone)
    cached = method.encode_classes(CLASSES)
    torch.testing.assert_close(method(images, CLASSES, cached).logits, method(images, CLASSES).logits)


@pytest.mark.parametrize("name", [n for n in METHODS if not list_methods()[n].touches_image_tower])
def test_image_features_do_not_depend_on_learned_state(name, tiny_backbone, images) -> None:
    method = build(name, tiny_backbone)
    before = method.encode_images(images)
    bump(method)
    assert torch.equal(method.encode_images(images), before)


@pytest.mark.parametrize("name", METHODS)
def test_bf16_autocast_is_finite(name, tiny_backbone, images) -> None:
    method = build(name, tiny_backbone)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method(images, CLASSES)
    assert torch.isfinite(out.logits).all()
    assert all(p.dtype == torch.float32 for p in method.parameters())  # fp32 master weights
