"""``prompts.safetensors`` (the method's learned tensors only) + ``prompt_config.json`` (how to rebuild it).

The JSON names the method and its full config, the backbone's identity (model, pretrained tag or the
sha256 of a local checkpoint, open_clip version, widths and depths), the template and class names
the prompts were trained with, the package version and git commit, and a training summary.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.files import atomic_write_bytes
from prompt_learning.methods.base import PromptMethod, create_method
from prompt_learning.provenance import git_commit, package_version

FORMAT_VERSION = 1
TENSORS_FILE, CONFIG_FILE = "prompts.safetensors", "prompt_config.json"
IDENTITY_KEYS = ("model_name", "embed_dim", "text_width", "text_depth", "vision_width", "vision_depth", "quick_gelu")


def save_export(directory: Path, method: PromptMethod, training: dict[str, Any] | None = None) -> Path:
    """Write the export of ``method`` into ``directory`` atomically; returns the directory."""
    directory = Path(directory)
    config = {
        "format_version": FORMAT_VERSION,
        "method": dataclasses.asdict(method.cfg),
        "backbone": method.backbone.identity(),
        "template": method.train_classes.template,
        "dataset": method.train_classes.dataset,
        "classnames": list(method.train_classes.names),
        "package_version": package_version(),
        "git_commit": git_commit(),
        "training": training or {},
    }
    atomic_write_bytes(directory / TENSORS_FILE, save(method.export_tensors(), metadata={"format": "pt"}))
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def read_export(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(f"No {CONFIG_FILE} in {str(directory)!r}; point at a run's export directory.")
    config = json.loads(path.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ConfigurationError(f"{path} has format_version {config.get('format_version')!r}; this version of "
                                 f"prompt_learning reads format_version {FORMAT_VERSION}.")
    return config


def _backbone_for(identity: dict[str, Any]) -> FrozenCLIP:
    pretrained = identity.get("checkpoint") or identity.get("pretrained")
    return FrozenCLIP(identity["model_name"], pretrained, quick_gelu=identity.get("quick_gelu"))


def check_backbone(identity: dict[str, Any], backbone: FrozenCLIP) -> None:
    """Refuse a backbone whose architecture or weights differ from the export's."""
    actual = backbone.identity()
    for key in IDENTITY_KEYS + ("pretrained", "checkpoint_sha256"):
        if identity.get(key) is not None and identity.get(key) != actual.get(key):
            raise ConfigurationError(f"Backbone mismatch on {key!r}: the export was trained on {identity.get(key)!r}, "
                                     f"the given backbone has {actual.get(key)!r}.")


def load_method(directory: Path, backbone: FrozenCLIP | None = None) -> PromptMethod:
    """Rebuild the exported method (on ``backbone``, or on the backbone the export names)."""
    config = read_export(directory)
    backbone = backbone or _backbone_for(config["backbone"])
    check_backbone(config["backbone"], backbone)
    classes = ClassSet(tuple(config["classnames"]), config["template"], config.get("dataset"))
    method = create_method(config["method"], backbone, classes)
    tensors_path = Path(directory) / TENSORS_FILE
    if not tensors_path.is_file():
        raise ConfigurationError(f"No {TENSORS_FILE} in {str(directory)!r}; point at a run's export directory.")
    try:
        tensors = load_file(tensors_path)
    except Exception as exc:  # safetensors' own errors: header too large, invalid JSON, truncated file...
        raise ConfigurationError(f"{tensors_path} is not a valid safetensors file ({exc}); re-export the prompts."
                                 ) from None
    method.load_tensors(tensors)
    return method.to(backbone.device)
