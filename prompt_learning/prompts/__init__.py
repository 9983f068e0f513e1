"""Building blocks that methods are made of (context vectors, prompt assembly, templates)."""

from prompt_learning.classes import ClassSet
from prompt_learning.prompts.context import ContextVectors

__all__ = ["ClassSet", "ContextVectors"]
