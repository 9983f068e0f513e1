"""Prompt-learning methods: one module per method, each class registered with ``@register_method``."""

from prompt_learning.methods.base import (
    METHODS,
    MethodConfig,
    MethodOutput,
    PromptMethod,
    create_method,
    list_methods,
    method_class,
    register_method,
)

__all__ = ["METHODS", "MethodConfig", "MethodOutput", "PromptMethod", "create_method", "list_methods", "method_class",
           "register_method"]
