"""What a loaded open_clip model allows, checked at setup so that errors come before long work."""

from __future__ import annotations

from torch import nn

from prompt_learning.errors import ConfigurationError


def text_tower_problem(model: nn.Module) -> str | None:
    """Why text prompts cannot be inserted into this model's text tower (None if they can)."""
    text = getattr(model, "text", None)
    owner = text if isinstance(text, nn.Module) else model
    if not hasattr(owner, "token_embedding") or not hasattr(owner, "transformer"):
        return f"its text tower ({type(owner).__name__}) is not an open_clip TextTransformer"
    if getattr(owner, "cls_emb", None) is not None:
        return "its text tower appends a CLS embedding (CoCa-style), which prompt slots do not support"
    if getattr(owner, "use_pad_mask", False):
        return "its text tower masks padding per sequence, which prompt slots do not support yet"
    return None


def vision_tower_problem(model: nn.Module) -> str | None:
    """Why vision prompts cannot be inserted into this model's image tower (None if they can)."""
    visual = model.visual
    if not (hasattr(visual, "_embeds") and hasattr(visual, "_pool") and hasattr(visual, "transformer")):
        return f"its image tower is a {type(visual).__name__}, not an open_clip VisionTransformer"
    return None


def require(problem: str | None, what: str, model_name: str, alternatives: str) -> None:
    """Raise a setup error naming the model, the missing capability and what to choose instead."""
    if problem is not None:
        raise ConfigurationError(f"{what} needs a different backbone: model {model_name!r} cannot, {problem}. "
                                 f"{alternatives}")
