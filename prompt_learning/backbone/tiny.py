"""Packaged tiny open_clip architectures (random weights for tests, trained weights for the demo).

open_clip finds model configs by name once their directory is registered with
``open_clip.add_model_config``; after that ``create_model("tiny_test")`` works offline like any
built-in name. ``tiny_synthetic`` (the embedded default) and ``tiny_synthetic_small`` (a narrower one, e.g.
PromptKD's student) ship trained weights (``weights/<name>.safetensors``, reproduced by
``scripts/pretrain_synthetic_clip.py``) that load through the same local-checkpoint path as any user checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"
TINY_SYNTHETIC_WEIGHTS = WEIGHTS_DIR / "tiny_synthetic.safetensors"
TINY_MODEL_NAMES = tuple(sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.json")))
PACKAGED_MODELS = ("tiny_synthetic", "tiny_synthetic_small")  # trained on the synthetic captions; weights ship

_registered = False


def register_tiny_models() -> None:
    """Make the packaged tiny architectures known to open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _registered = True


def packaged_weights(tag: str, model_name: str = "tiny_synthetic") -> Path | None:
    """Resolve the pseudo tag ``packaged`` to the shipped checkpoint of ``model_name`` (None for other tags)."""
    if tag != "packaged":
        return None
    if model_name not in PACKAGED_MODELS:
        raise ValueError(f"No packaged weights for open_clip model {model_name!r}: backbone.pretrained=packaged is for "
                         f"{', '.join(PACKAGED_MODELS)}.")
    return WEIGHTS_DIR / f"{model_name}.safetensors"
