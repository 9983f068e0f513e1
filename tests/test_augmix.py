"""data.augmix: TPT's test-time views (random crop, optionally AugMix-ed), all randomness from torch."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

from prompt_learning.data import augmix
from prompt_learning.data.augmix import AUGMIX_OPS, TPTViews

CFG = {"size": 32, "mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28)}
DRAWS = 300


def synthetic_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    pixels = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(pixels.numpy(), "RGB")


def view(views: TPTViews, seed: int, image: Image.Image | None = None) -> torch.Tensor:
    torch.manual_seed(seed)
    return views(image or synthetic_image())


def reference_crop(seed: int) -> Image.Image:
    """TPT's preaugment built directly from torchvision, drawn from ``seed``."""
    torch.manual_seed(seed)
    crop = T.Compose([T.RandomResizedCrop(CFG["size"], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                                          interpolation=T.InterpolationMode.BILINEAR), T.RandomHorizontalFlip()])
    return crop(synthetic_image())


NORMALISE = T.Compose([T.ToTensor(), T.Normalize(CFG["mean"], CFG["std"])])


def identity(image: Image.Image, severity: float) -> Image.Image:
    return image.copy()


def black(image: Image.Image, severity: float) -> Image.Image:
    return Image.new("RGB", image.size)


def invert(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.invert(image)


def equalize(image: Image.Image, severity: float) -> Image.Image:
    return ImageOps.equalize(image)


@pytest.mark.parametrize("mix", [False, True])
def test_view_is_a_finite_float32_image_of_the_model_size(mix: bool) -> None:
    out = view(TPTViews(CFG, augmix=mix), seed=0)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("mix", [False, True])
def test_same_seed_same_view_different_seed_different_view(mix: bool) -> None:
    views = TPTViews(CFG, augmix=mix)
    assert torch.equal(view(views, 3), view(views, 3))
    assert not torch.equal(view(views, 3), view(views, 4))


def test_randomness_comes_from_torch_only() -> None:
    views = TPTViews(CFG, augmix=True)
    outs = []
    for other in (1, 2):
        np.random.seed(other)
        random.seed(other)
        outs.append(view(views, 5))
    assert torch.equal(*outs)


@pytest.mark.parametrize("seed", range(5))
def test_without_augmix_the_view_is_the_torchvision_crop_flip_normalise(seed: int) -> None:
    assert torch.equal(view(TPTViews(CFG, augmix=False), seed), NORMALISE(reference_crop(seed)))


def test_with_an_identity_op_the_mix_is_the_processed_crop() -> None:
    """The chains equal x_orig and the w sum to 1, so the mix is x_processed whatever w and m are."""
    for seed in range(5):
        mixed = view(TPTViews(CFG, augmix=True, ops=(identity,)), seed)
        torch.testing.assert_close(mixed, view(TPTViews(CFG, augmix=False), seed), rtol=0, atol=1e-5)


def test_the_view_is_an_affine_mix_of_the_processed_crop_and_the_chains() -> None:
    """Chains that end black: view = m * x_processed + (1 - m) * c with c the normalised black, one m in
    [0, 1] for every pixel, and a different m for another seed."""
    black_level = NORMALISE(Image.new("RGB", (32, 32)))  # (3, 32, 32)
    ms = []
    for seed in (0, 1):
        processed = NORMALISE(reference_crop(seed)) - black_level
        share = (view(TPTViews(CFG, augmix=True, ops=(black,)), seed) - black_level) / processed
        m = share[processed.abs() > 0.5].median()
        assert 0 <= m <= 1
        torch.testing.assert_close(m * processed + black_level,
                                   view(TPTViews(CFG, augmix=True, ops=(black,)), seed), rtol=0, atol=1e-5)
        ms.append(float(m))
    assert ms[0] != ms[1]


@pytest.mark.parametrize("seed", range(6))
def test_mix_equals_a_hand_computation_replaying_the_draws(seed: int) -> None:
    """Replays the documented draw order: crop and flip, w ~ Dir(1, 1, 1), m ~ Beta(1, 1), then per chain
    the depth and each op; two deterministic ops so that the chains differ."""
    ops = (invert, equalize)
    x_orig = reference_crop(seed)  # leaves the generator just past the crop and flip
    w = torch.distributions.Dirichlet(torch.ones(3)).sample()
    m = torch.distributions.Beta(1.0, 1.0).sample()
    assert 0 <= m <= 1 and torch.isclose(w.sum(), torch.tensor(1.0))
    chains = []
    for _ in range(3):
        chain = x_orig
        for _ in range(int(torch.randint(1, 4, ()))):
            chain = ops[int(torch.randint(2, ()))](chain, 1.0)
        chains.append(NORMALISE(chain))
    expected = m * NORMALISE(x_orig) + (1 - m) * sum(w[i] * chains[i] for i in range(3))
    got = view(TPTViews(CFG, augmix=True, ops=ops), seed)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_the_op_table_is_tpts_nine_ops() -> None:
    assert [op.__name__ for op in AUGMIX_OPS] == ["autocontrast", "equalize", "posterize", "rotate", "solarize",
                                                  "shear_x", "shear_y", "translate_x", "translate_y"]
    image = synthetic_image(224, 224)
    torch.manual_seed(0)
    for op in AUGMIX_OPS:
        out = op(image, 1.0)
        assert out.size == (224, 224) and out.mode == "RGB"


def record(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, pick) -> list:
    """Wraps ``owner.name`` so that each call appends ``pick(*args)`` to the returned list."""
    calls, original = [], getattr(owner, name)

    def spy(*args, **kwargs):
        calls.append(pick(*args))
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


IDENTITY = (1, 0, 0, 0, 1, 0)  # PIL's affine coefficients (a, b, c, d, e, f) of the identity


def without(coeffs: tuple, slot: int) -> tuple:
    """The affine coefficients with ``slot`` set to its identity value."""
    return tuple(IDENTITY[k] if k == slot else c for k, c in enumerate(coeffs))


def run_op(op, size: int = 224) -> None:
    image = synthetic_image(size, size)
    torch.manual_seed(0)
    for _ in range(DRAWS):
        op(image, 1.0)


def test_posterize_keeps_4_bits_at_severity_1(monkeypatch: pytest.MonkeyPatch) -> None:
    bits = record(monkeypatch, ImageOps, "posterize", lambda image, b: b)
    run_op(augmix.posterize)
    assert set(bits) == {4}


def test_solarize_threshold_is_256_minus_int_level_times_25_6(monkeypatch: pytest.MonkeyPatch) -> None:
    thresholds = record(monkeypatch, ImageOps, "solarize", lambda image, t: t)
    run_op(augmix.solarize)
    assert len(thresholds) == DRAWS and set(thresholds) <= set(range(231, 255))
    assert min(thresholds) <= 234 and max(thresholds) >= 252  # the level spans [0.1, 1]


def test_rotate_by_at_most_2_degrees_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    degrees = record(monkeypatch, Image.Image, "rotate", lambda image, d: d)
    run_op(augmix.rotate)
    assert set(degrees) == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize(("op", "slot"), [(augmix.shear_x, 1), (augmix.shear_y, 3)])
def test_shear_is_at_most_0_03_either_way(monkeypatch: pytest.MonkeyPatch, op, slot: int) -> None:
    data = record(monkeypatch, Image.Image, "transform", lambda image, size, method, coeffs: (size, method, coeffs))
    run_op(op)
    assert all(size == (224, 224) and method == Image.AFFINE for size, method, _ in data)
    shears = torch.tensor([coeffs[slot] for *_, coeffs in data])
    assert {without(coeffs, slot) for *_, coeffs in data} == {IDENTITY}
    assert ((shears.abs() >= 0.003 - 1e-9) & (shears.abs() <= 0.03)).all()
    assert shears.min() < -0.025 and shears.max() > 0.025


@pytest.mark.parametrize(("size", "largest"), [(224, 7), (32, 1)])
@pytest.mark.parametrize(("op", "slot"), [(augmix.translate_x, 2), (augmix.translate_y, 5)])
def test_translate_by_at_most_a_thirtieth_of_the_side(monkeypatch: pytest.MonkeyPatch, op, slot: int,
                                                      size: int, largest: int) -> None:
    data = record(monkeypatch, Image.Image, "transform", lambda image, size, method, coeffs: coeffs)
    run_op(op, size)
    shifts = [coeffs[slot] for coeffs in data]
    assert all(float(s).is_integer() for s in shifts) and set(shifts) == set(range(-largest, largest + 1))
    assert {without(coeffs, slot) for coeffs in data} == {IDENTITY}


def test_translate_x_moves_the_content_by_the_drawn_shift(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.zeros((224, 224, 3), np.uint8)
    pixels[:, 100] = 255
    shifts = record(monkeypatch, Image.Image, "transform", lambda image, size, method, coeffs: coeffs[2])
    torch.manual_seed(0)
    for _ in range(20):
        out = np.asarray(augmix.translate_x(Image.fromarray(pixels), 1.0))
        assert out[:, 100 - shifts[-1]].min() == 255 and out.sum() == pixels.sum()
    assert len(set(shifts)) > 1
