"""Hand-written prompt templates (CLIP's zero-shot baselines; docs/methods/zeroshot.md).

A template list may contain two shorthands:
* ``"dataset"`` -- the dataset's own hand-written template (``ClassSet.template``, e.g.
  ``"{} texture."`` for DTD), the "CLIP" row of every base-to-new table;
* ``"ensemble"`` -- the 7 templates of ``IMAGENET_TEMPLATES_SELECT`` (CoOp's ``ZeroshotCLIP2``).
  CoOp appends the dataset template for non-ImageNet datasets: write ``[ensemble, dataset]``.
* ``"imagenet80"`` -- the 80 templates of CLIP's ImageNet prompt ensemble (``IMAGENET_TEMPLATES``).
* ``"imagenet60"`` -- their first 60 (PromptSRC's "textual diversity" set, docs/methods/promptsrc.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from prompt_learning.errors import ConfigurationError

IMAGENET_TEMPLATES_SELECT = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

# CLIP's 80 ImageNet prompt-ensemble templates, in the order of OpenAI's notebook and CoOp's list.
IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
# Per-dataset variants of CoOp's hand-written templates (docs/datasets.md), keyed by dataset name.
KGCOOP_TEMPLATES = {"dtd": "a photo of a {}, a type of texture."}
PROGRAD_TEMPLATES = {"oxford_pets": "a type of pet, a photo of a {}.", "oxford_flowers": "a type of flower, a photo of a {}.",
                     "food101": "a type of food, a photo of {}.", "dtd": "a texture of {}."}


def dataset_template(classes, overrides: dict[str, str]) -> str:
    """The template a method uses for ``classes``: its own table's entry for the dataset, else the dataset's."""
    return overrides.get(classes.dataset or "", classes.template)


SHORTHANDS = {"ensemble": IMAGENET_TEMPLATES_SELECT, "imagenet80": IMAGENET_TEMPLATES,
              "imagenet60": IMAGENET_TEMPLATES[:60]}


def resolve_templates(entries: Sequence[str], dataset_template: str) -> tuple[str, ...]:
    """Expand the shorthands and check that every template has exactly one ``{}``."""
    out: list[str] = []
    for entry in entries:
        if entry == "dataset":
            out.append(dataset_template)
        elif entry in SHORTHANDS:
            out.extend(SHORTHANDS[entry])
        else:
            out.append(entry)
    for template in out:
        if template.count("{}") != 1:
            raise ConfigurationError(f"Template {template!r} must contain exactly one '{{}}' for the class name.")
    if not out:
        raise ConfigurationError("The template list is empty; use e.g. templates=[dataset].")
    return tuple(dict.fromkeys(out))  # ordered, without duplicates
