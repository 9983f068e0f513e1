"""Hand-written prompt templates (CLIP's zero-shot baselines; methods.md §2.1).

A template list may contain two shorthands:
* ``"dataset"`` -- the dataset's own hand-written template (``ClassSet.template``, e.g.
  ``"{} texture."`` for DTD), the "CLIP" row of every base-to-new table;
* ``"ensemble"`` -- the 7 templates of ``IMAGENET_TEMPLATES_SELECT`` (CoOp's ``ZeroshotCLIP2``).
  CoOp appends the dataset template for non-ImageNet datasets: write ``[ensemble, dataset]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from prompt_learning.errors import ConfigurationError

IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)


def resolve_templates(entries: Sequence[str], dataset_template: str) -> tuple[str, ...]:
    """Expand the shorthands and check that every template has exactly one ``{}``."""
    out: list[str] = []
    for entry in entries:
        if entry == "dataset":
            out.append(dataset_template)
        elif entry == "ensemble":
            out.extend(IMAGENET_TEMPLATES_SELECT)
        else:
            out.append(entry)
    for template in out:
        if template.count("{}") != 1:
            raise ConfigurationError(f"Template {template!r} must contain exactly one '{{}}' for the class name.")
    if not out:
        raise ConfigurationError("The template list is empty; use e.g. templates=[dataset].")
    return tuple(dict.fromkeys(out))  # ordered, without duplicates
