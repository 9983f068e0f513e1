"""Learned prompts as small, self-describing files (no Lightning, no Hydra on this path), shareable
through the Hugging Face Hub (``hf-hub:<owner>/<name>``, ``push_to_hub``)."""

from prompt_learning.export.classifier import classifier_problem, export_classifier
from prompt_learning.export.io import FORMAT_VERSION, load_method, push_to_hub, read_export, save_export
from prompt_learning.export.prompted_clip import Prediction, PromptedCLIP

__all__ = ["FORMAT_VERSION", "Prediction", "PromptedCLIP", "classifier_problem", "export_classifier", "load_method",
           "push_to_hub", "read_export", "save_export"]
