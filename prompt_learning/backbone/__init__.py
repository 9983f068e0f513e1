"""Frozen open_clip backbones, driven from token embeddings (plain torch; no Lightning, no Hydra)."""

from prompt_learning.backbone.clip import FrozenCLIP
from prompt_learning.backbone.tiny import TINY_MODEL_NAMES, TINY_SYNTHETIC_WEIGHTS, register_tiny_models
from prompt_learning.backbone.towers import DeepPrompts, run_blocks

__all__ = ["TINY_MODEL_NAMES", "TINY_SYNTHETIC_WEIGHTS", "DeepPrompts", "FrozenCLIP", "register_tiny_models",
           "run_blocks"]
