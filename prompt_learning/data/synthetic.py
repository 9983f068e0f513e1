"""The embedded default dataset: procedurally rendered coloured shapes ("red star", "blue ring").

No files on disk: every image is rendered from (render seed, split, index), so the dataset is the same
on every machine. 8 colours x 8 shapes = 64 compositional classes, colour-major label order, so the
base-to-new split (first 32 labels = base) separates red/green/blue/yellow from the other colours.

Two visual domains:

* ``pretrain`` -- large shapes on flat to medium-contrast striped backgrounds: what the packaged ``tiny_synthetic`` CLIP
  was trained on (``scripts/pretrain_synthetic_clip.py``), with captions of 48 of the 64 classes;
  the 16 in :data:`PRETRAIN_HELD_OUT` (two per colour, two per shape) were never seen.
* ``task`` -- smaller shapes on bolder stripes with more noise: the few-shot task. It differs
  from pretraining so that zero-shot transfer is imperfect and learning prompts matters.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10), "purple": (0.60, 0.20, 0.80), "orange": (1.00, 0.55, 0.05),
    "pink": (1.00, 0.45, 0.75), "cyan": (0.10, 0.85, 0.90),
}
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "crescent")
CLASSNAMES = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
PRETRAIN_HELD_OUT = frozenset(f"{c} {SHAPES[(i + k) % len(SHAPES)]}" for i, c in enumerate(COLOURS) for k in (0, 3))
PRETRAIN_CLASSES = tuple(c for c in CLASSNAMES if c not in PRETRAIN_HELD_OUT)
TEMPLATE = "a photo of a {}."
SPLIT_OFFSETS = {"train": 0, "val": 1_000_003, "test": 2_000_003, "pretrain": 3_000_017}


def _sdf(name: str, qx: Tensor, qy: Tensor) -> Tensor:
    """Signed distance-like field of a unit-size shape (negative inside), in local coordinates."""
    r = torch.sqrt(qx**2 + qy**2)
    if name == "circle":
        return r - 0.9
    if name == "square":
        return torch.maximum(qx.abs(), qy.abs()) - 0.72
    if name == "triangle":
        return torch.maximum(torch.maximum(-qy, 0.866 * qx + 0.5 * qy), -0.866 * qx + 0.5 * qy) - 0.48
    if name == "star":
        tri = (torch.remainder(torch.atan2(qy, qx) * 5 / (2 * math.pi), 1.0) - 0.5).abs() * 2  # 1 at tips
        return r - (0.38 + 0.55 * tri)
    if name == "ring":
        return (r - 0.68).abs() - 0.2
    if name == "cross":
        return torch.minimum(torch.maximum(qx.abs() - 0.25, qy.abs() - 0.9),
                             torch.maximum(qx.abs() - 0.9, qy.abs() - 0.25))
    if name == "diamond":
        return qx.abs() / 0.65 + qy.abs() - 0.95
    if name == "crescent":
        return torch.maximum(r - 0.9, -(torch.sqrt((qx - 0.45) ** 2 + qy**2) - 0.72))
    raise KeyError(name)


def _u(gen: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=gen)


def _backgrounds(gen: torch.Generator, n: int, xs: Tensor, ys: Tensor, domain: str) -> Tensor:
    """(n, 3, S, S) two-colour stripes: from flat to medium contrast for ``pretrain``, bolder for ``task``."""
    lo, hi = (0.0, 0.5) if domain == "pretrain" else (0.3, 0.6)
    c1 = _u(gen, n, 0.05, 0.85, 3, 1, 1)
    c2 = (c1 + _u(gen, n, -1, 1, 3, 1, 1) * _u(gen, n, lo, hi, 1, 1, 1)).clamp(0, 1)
    angle, freq, phase = _u(gen, n, 0, math.pi, 1, 1), _u(gen, n, 3, 10, 1, 1), _u(gen, n, 0, 6.3, 1, 1)
    stripes = (torch.sin(freq * (xs * angle.cos() + ys * angle.sin()) * math.pi + phase) > 0).float()  # (n, S, S)
    return c1 * stripes[:, None] + c2 * (1 - stripes[:, None])


def render(labels: Tensor, size: int, gen: torch.Generator, domain: str = "task") -> Tensor:
    """Render (n,) class indices into (n, 3, size, size) images in [0, 1]."""
    n = labels.shape[0]
    lin = (torch.arange(size) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(lin, lin, indexing="ij")  # (S, S) each, in [-1, 1]
    image = _backgrounds(gen, n, xs, ys, domain)  # (n, 3, S, S)
    lo, hi = (0.45, 0.85) if domain == "pretrain" else (0.35, 0.65)
    radius, rot = _u(gen, n, lo, hi, 1, 1), _u(gen, n, 0, 2 * math.pi, 1, 1)
    cx, cy = _u(gen, n, -0.25, 0.25, 1, 1), _u(gen, n, -0.25, 0.25, 1, 1)
    dx, dy = (xs - cx) / radius, (ys - cy) / radius  # (n, S, S)
    qx, qy = dx * rot.cos() + dy * rot.sin(), -dx * rot.sin() + dy * rot.cos()
    palette = torch.tensor(list(COLOURS.values()))  # (8, 3)
    colour = (palette[labels // len(SHAPES)] + _u(gen, n, -0.06, 0.06, 3)).clamp(0, 1)  # (n, 3)
    sdf = torch.stack([_sdf(SHAPES[int(s)], qx[i], qy[i]) for i, s in enumerate(labels % len(SHAPES))])
    mask = torch.sigmoid(-sdf * radius * size / 2.0)[:, None]  # (n, 1, S, S), ~1 px soft edge
    image = image * (1 - mask) + colour[:, :, None, None] * mask
    noise = 0.03 if domain == "pretrain" else 0.06
    return (image + noise * torch.randn(image.shape, generator=gen)).clamp(0, 1)


def to_pil(image: Tensor) -> Image.Image:
    """(3, S, S) float image in [0, 1] -> RGB PIL image."""
    array = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array, mode="RGB")


class SyntheticImageLoader:
    """Maps an item reference ``"<split>/<index>/<label>"`` to its rendered PIL image (picklable)."""

    def __init__(self, render_seed: int, size: int, domain: str = "task") -> None:
        self.render_seed, self.size, self.domain = render_seed, size, domain

    def __repr__(self) -> str:  # stable across processes: part of the decoded-image cache key
        return f"SyntheticImageLoader(render_seed={self.render_seed}, size={self.size}, domain={self.domain!r})"

    def __call__(self, ref: str) -> Image.Image:
        split, index, label = ref.split("/")
        gen = torch.Generator().manual_seed(self.render_seed * 10_000_019 + SPLIT_OFFSETS[split] + int(index))
        return to_pil(render(torch.tensor([int(label)]), self.size, gen, self.domain)[0])
