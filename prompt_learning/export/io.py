"""``prompts.safetensors`` (the method's learned tensors only) + ``prompt_config.json`` (how to rebuild it)
+ ``README.md`` (a model card rendered from the config).

The JSON names the method and its full config, the backbone's identity (model, pretrained tag, or the
file name and sha256 of a local checkpoint: never a directory of the machine that wrote it; open_clip
version, widths and depths), the template and class names the prompts were trained with, the package
version and git commit, a training summary (with the command of the run) and the run's test results.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import hub
from prompt_learning.export.backbones import IDENTITY_KEYS, backbone_for, check_backbone
from prompt_learning.export.card import launch_command, model_card
from prompt_learning.files import atomic_write_bytes
from prompt_learning.methods.base import PromptMethod, create_method
from prompt_learning.provenance import git_commit, package_version

FORMAT_VERSION = 1
TENSORS_FILE, CONFIG_FILE, CARD_FILE = "prompts.safetensors", "prompt_config.json", "README.md"
__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT_VERSION", "IDENTITY_KEYS", "TENSORS_FILE", "check_backbone",
           "export_config", "export_dir", "load_method", "push_to_hub", "read_export", "save_export", "write_export"]


def run_results(record: dict[str, Any]) -> dict[str, Any]:
    """The test results of a run's record (results.json) that an export keeps for its model card."""
    zero_shot = record.get("zero_shot") or None
    keep = ("metrics", "hm")
    return {"protocol": record.get("protocol"), **{k: record[k] for k in keep if record.get(k) is not None},
            "zero_shot": {k: zero_shot[k] for k in keep if zero_shot.get(k) is not None} if zero_shot else None}


def export_config(method: PromptMethod, training: dict[str, Any] | None = None,
                  results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``prompt_config.json`` for ``method`` as it is now."""
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
    return {**config, "results": results} if results else config


def write_export(directory: Path, tensors: dict[str, Tensor], config: dict[str, Any],
                 repo_id: str | None = None) -> Path:
    """Write the three files of an export into ``directory``, each atomically (the config last, so that a
    reader never finds a config without its tensors); returns the directory."""
    directory = Path(directory)
    atomic_write_bytes(directory / TENSORS_FILE, save(tensors, metadata={"format": "pt"}))
    atomic_write_bytes(directory / CARD_FILE, model_card(config, repo_id).encode())
    atomic_write_bytes(directory / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    return directory


def save_export(directory: Path, method: PromptMethod, training: dict[str, Any] | None = None, *,
                record: dict[str, Any] | None = None, command: str | None = None) -> Path:
    """Write the export of ``method`` into ``directory``; returns the directory.

    ``record``: the run's results record (results.json): its test metrics go into the config and the model
    card, and, unless ``command`` says otherwise, so does the command that launched this process
    (``card.launch_command``), as the command that reproduces the run."""
    training = dict(training or {})
    if command is not None or record is not None:
        training["command"] = command if command is not None else launch_command(run_dir=Path(directory).parent)
    config = export_config(method, training, run_results(record) if record else None)
    return write_export(directory, method.export_tensors(), config)


def export_dir(path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
               token: str | bool | None = None) -> Path:
    """The local export directory of ``path``: a directory, one of its files, or ``hf-hub:<owner>/<name>``
    (downloaded through the Hugging Face cache; ``@<revision>`` or ``revision`` picks a branch, tag or commit)."""
    reference = hub.hub_reference(path)
    if reference is not None:
        repo_id, ref_revision = reference
        return hub.download_export(repo_id, revision or ref_revision, cache_dir, token)
    path = Path(path).expanduser()
    return path.parent if path.is_file() else path


def read_export(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(f"No {CONFIG_FILE} in {str(directory)!r}; point at a run's export directory.")
    config = json.loads(path.read_text())
    if config.get("format_version") != FORMAT_VERSION:
        raise ConfigurationError(f"{path} has format_version {config.get('format_version')!r}; this version of "
                                 f"prompt_learning reads format_version {FORMAT_VERSION}.")
    return config


def _backbone_for(identity: dict[str, Any], checkpoint: str | Path | None = None) -> FrozenCLIP:
    """The backbone an export names (``backbones.backbone_for``); one place to substitute it."""
    return backbone_for(identity, checkpoint)


def load_method(directory: str | Path, backbone: FrozenCLIP | str | Path | None = None) -> PromptMethod:
    """Rebuild the exported method (``directory``: see ``export_dir``). ``backbone``: a ``FrozenCLIP`` to
    run it on, the path of the export's checkpoint file on this machine (checked by sha256), or None for
    the backbone the export names (a tag, the packaged weights, or random weights)."""
    directory = export_dir(directory)
    config = read_export(directory)
    identity = config["backbone"]
    if isinstance(backbone, FrozenCLIP):
        check_backbone(identity, backbone)
    else:
        backbone = _backbone_for(identity) if backbone is None else _backbone_for(identity, backbone)
        check_backbone(identity, backbone, check_weights=False)  # the weights were resolved from the identity
    classes = ClassSet(tuple(config["classnames"]), config["template"], config.get("dataset"))
    method = create_method(config["method"], backbone, classes)
    tensors_path = directory / TENSORS_FILE
    if not tensors_path.is_file():
        raise ConfigurationError(f"No {TENSORS_FILE} in {str(directory)!r}; point at a run's export directory.")
    try:
        tensors = load_file(tensors_path)
    except Exception as exc:  # safetensors' own errors: header too large, invalid JSON, truncated file...
        raise ConfigurationError(f"{tensors_path} is not a valid safetensors file ({exc}); re-export the prompts."
                                 ) from None
    method.load_tensors(tensors)
    return method.to(backbone.device)


def push_to_hub(directory: str | Path, repo_id: str, *, private: bool | None = None, token: str | None = None,
                commit_message: str | None = None, revision: str | None = None) -> str:
    """Upload an export directory to the hub model repository ``repo_id`` (created if needed): its tensors,
    its config and a model card whose loading snippet names ``hf-hub:<repo_id>``. Returns the commit URL."""
    directory = export_dir(directory)
    config = read_export(directory)
    if not (directory / TENSORS_FILE).is_file():
        raise ConfigurationError(f"No {TENSORS_FILE} in {str(directory)!r}; point at a run's export directory.")
    with tempfile.TemporaryDirectory(prefix="prompt-export-") as staging:
        for name in (TENSORS_FILE, CONFIG_FILE):
            shutil.copyfile(directory / name, Path(staging) / name)
        (Path(staging) / CARD_FILE).write_text(model_card(config, repo_id))
        return hub.upload_folder(Path(staging), repo_id, private=private, token=token,
                                 commit_message=commit_message, revision=revision)
