"""prompt_learning: learned soft prompts on frozen open_clip backbones.

Public API (plain torch; Lightning and Hydra live in ``engine/``, ``config/`` and ``scripts/``)::

    from prompt_learning import ClassSet, FrozenCLIP, PromptedCLIP, create_method, list_methods, load_method
"""

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.export import PromptedCLIP, export_classifier, load_method, save_export
from prompt_learning.methods import create_method, list_methods

__all__ = ["ClassSet", "FrozenCLIP", "PromptedCLIP", "create_method", "export_classifier", "list_methods", "load_method",
           "save_export"]
