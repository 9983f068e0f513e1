"""Packaged tiny open_clip architectures (random weights for tests, trained weights for the demo).

open_clip finds model configs by name once their directory is registered with
``open_clip.add_model_config``; after that ``create_model("tiny_test")`` works offline like any
built-in name. ``tiny_synthetic`` ships trained weights (``weights/tiny_synthetic.safetensors``,
reproduced by ``scripts/pretrain_synthetic_clip.py``) that load through the same local-checkpoint
path as any user checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
TINY_SYNTHETIC_WEIGHTS = WEIGHTS_DIR / "tiny_synthetic.safetensors"
TINY_MODEL_NAMES = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))

_registered = False


def register_tiny_models() -> None:
    """Make the packaged tiny architectures known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def packaged_weights(tag: str) -> Path | None:
    """Resolve the pseudo tag ``packaged`` to the shipped tiny_synthetic checkpoint."""
    return TINY_SYNTHETIC_WEIGHTS if tag == "packaged" else None
