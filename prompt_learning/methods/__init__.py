"""Prompt-learning methods: one module per method, discovered by ``list_methods()``."""

from prompt_learning.methods.base import (
                                          MethodConfig,
                                          MethodOutput,
                                          PromptMethod,
                                          create_method,
                                          list_methods,
                                          method_class,
)

__all__ = ["MethodConfig", "MethodOutput", "PromptMethod", "create_method", "list_methods", "method_class"]
