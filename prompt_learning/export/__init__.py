"""Learned prompts as small, self-describing files (no Lightning, no Hydra on this path)."""

from prompt_learning.export.io import FORMAT_VERSION, load_method, read_export, save_export

__all__ = ["FORMAT_VERSION", "load_method", "read_export", "save_export"]
