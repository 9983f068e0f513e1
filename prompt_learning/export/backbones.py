"""The frozen backbone an export names, rebuilt on this machine.

An export identifies its weights without a directory (``FrozenCLIP.identity``): an open_clip tag, the
packaged tiny CLIP (``packaged``), a local checkpoint by file name + sha256, or none (random weights).
Tags and the packaged weights resolve by name. A local checkpoint is wherever the user keeps it: they
pass its path (``from_pretrained(..., backbone=<path>)``), and its sha256 must be the export's.

Exports written before identities dropped directories store the checkpoint's absolute path; such a
file is still used where it exists, and the packaged weights are recognised by name and digest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.backbone.tiny import TINY_SYNTHETIC_WEIGHTS
from prompt_learning.backbone.weights import PACKAGED_TAG, resolve_pretrained, sha256_of
from prompt_learning.errors import BackboneWeightsError, ConfigurationError

IDENTITY_KEYS = ("model_name", "embed_dim", "text_width", "text_depth", "vision_width", "vision_depth", "quick_gelu")
log = logging.getLogger(__name__)
POINT_AT_FILE = "PromptedCLIP.from_pretrained(export, backbone='/path/to/file.safetensors')"


def weights_label(identity: dict[str, Any]) -> str:
    """How the weights of ``identity`` are named in messages: tag, file name + sha256, or random."""
    if identity.get("pretrained"):
        return f"pretrained={identity['pretrained']!r}"
    if identity.get("checkpoint") or identity.get("checkpoint_sha256"):
        name = Path(identity.get("checkpoint") or "?").name
        return f"checkpoint {name!r} (sha256 {identity.get('checkpoint_sha256')})"
    return "random weights"


def check_backbone(identity: dict[str, Any], backbone: FrozenCLIP, check_weights: bool = True) -> None:
    """Refuse a backbone whose architecture or weights differ from the export's. Weights named by a
    sha256 must have that content (whatever the file is called); a tag must be the same tag.
    ``check_weights=False``: the weights were already checked (a checkpoint path given for the export)."""
    actual = backbone.identity()
    for key in IDENTITY_KEYS:
        if identity.get(key) is not None and identity.get(key) != actual.get(key):
            raise ConfigurationError(f"Backbone mismatch on {key!r}: the export was trained on {identity.get(key)!r}, "
                                     f"the given backbone has {actual.get(key)!r}.")
    if not check_weights:
        return
    digest, tag = identity.get("checkpoint_sha256"), identity.get("pretrained")
    if digest is not None:
        differs = digest != actual.get("checkpoint_sha256")  # the content decides, whatever the file's name
    else:
        differs = tag is not None and tag != actual.get("pretrained")
    if differs:
        raise ConfigurationError(f"Backbone mismatch on the weights: the export was trained on "
                                 f"{weights_label(identity)}, the given backbone has {weights_label(actual)}.")


def _verified(path: Path, identity: dict[str, Any]) -> Path:
    """``path`` when it is a file with the export's sha256 (any name), else a message naming both digests.
    Weights named by a tag have no digest to compare: a file given for them is taken on trust."""
    if not path.is_file():
        raise BackboneWeightsError(f"backbone={str(path)!r}: no such checkpoint file.")
    expected, actual = identity.get("checkpoint_sha256"), sha256_of(path)
    if expected is not None and actual != expected:
        name = Path(identity.get("checkpoint") or "?").name
        raise BackboneWeightsError(f"backbone={str(path)!r} is not the checkpoint this export was trained on: the file "
                                   f"has sha256 {actual}, the export expects {name!r} with sha256 {expected}.")
    if expected is None and identity.get("pretrained"):
        log.warning("Using %s for an export trained on %s; a tag has no sha256, so the file's content is not "
                    "checked.", path, weights_label(identity))
    return path


def _packaged_copy(identity: dict[str, Any]) -> bool:
    """An identity (old exports: the absolute path of the packaged file) that names the packaged weights."""
    name = identity.get("checkpoint")
    return bool(name) and Path(name).name == TINY_SYNTHETIC_WEIGHTS.name and TINY_SYNTHETIC_WEIGHTS.is_file() \
        and identity.get("checkpoint_sha256") == sha256_of(TINY_SYNTHETIC_WEIGHTS)


def backbone_for(identity: dict[str, Any], checkpoint: str | Path | None = None) -> FrozenCLIP:
    """The backbone an export names; ``checkpoint``: where the export's checkpoint file is on this machine."""
    model, quick_gelu = identity["model_name"], identity.get("quick_gelu")
    if checkpoint is not None:
        return FrozenCLIP(model, str(_verified(Path(checkpoint).expanduser(), identity)), quick_gelu=quick_gelu)
    tag = identity.get("pretrained")
    if tag is None and _packaged_copy(identity):
        tag = PACKAGED_TAG
    if tag is not None:
        if tag != PACKAGED_TAG:
            resolve_pretrained(model, tag, point_at=POINT_AT_FILE)  # unreachable weights: say how to pass a file
        return FrozenCLIP(model, tag, quick_gelu=quick_gelu)
    name = identity.get("checkpoint")
    if name is None and identity.get("checkpoint_sha256") is None:
        return FrozenCLIP(model, None, quick_gelu=quick_gelu)  # trained on random weights: only shapes matter
    stored = Path(name or "checkpoint")
    if stored.is_absolute() and stored.is_file():  # an old export's absolute path, still valid here
        return FrozenCLIP(model, str(_verified(stored, identity)), quick_gelu=quick_gelu)
    was = f" (it was at {str(stored)!r})" if stored.is_absolute() else ""
    raise BackboneWeightsError(
        f"This export was trained on open_clip model {model!r} with the local checkpoint {stored.name!r} "
        f"(sha256 {identity.get('checkpoint_sha256')}){was}, which is neither packaged nor an open_clip tag. Pass "
        f"its path: PromptedCLIP.from_pretrained(export, backbone='<path to {stored.name}>') "
        f"(pl-predict / scripts/predict.py: backbone=<path to {stored.name}>).")
