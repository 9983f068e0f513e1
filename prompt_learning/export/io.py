"""``prompts.safetensors`` (the method's learned tensors only) + ``prompt_config.json`` (how to rebuild it)
+ ``README.md`` (a model card rendered from the config).

The JSON names the method and its full config, the backbone's identity (model, pretrained tag, or the
file name and sha256 of a local checkpoint: never a directory of the machine that wrote it; open_clip
version, widths and depths), the template and class names the prompts were trained with, the package
version and git commit, a training summary (with the command of the run) and the run's test results.
``check_config`` is its schema, applied on reading and before writing: an unknown or missing key, a value of
the wrong kind or a class list with an empty or repeated name is refused with the file and key named.
``read_tensors`` checks ``prompts.safetensors`` (a readable file of finite floating-point tensors).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from prompt_learning.backbone import FrozenCLIP
from prompt_learning.classes import ClassSet, check_class_names
from prompt_learning.errors import ConfigurationError
from prompt_learning.export import hub
from prompt_learning.export.backbones import IDENTITY_KEYS, backbone_for, check_backbone
from prompt_learning.export.card import launch_command, model_card
from prompt_learning.files import atomic_write_bytes
from prompt_learning.formats import FormatError, check_keys, expect, load_json_file
from prompt_learning.methods.base import PromptMethod, create_method
from prompt_learning.provenance import git_commit, package_version

FORMAT_VERSION = 1
TENSORS_FILE, CONFIG_FILE, CARD_FILE = "prompts.safetensors", "prompt_config.json", "README.md"
REQUIRED_KEYS = ("format_version", "method", "backbone", "template", "classnames")
OPTIONAL_KEYS = ("dataset", "package_version", "git_commit", "training", "results")
__all__ = ["CARD_FILE", "CONFIG_FILE", "FORMAT_VERSION", "IDENTITY_KEYS", "TENSORS_FILE", "check_backbone",
           "check_config", "export_config", "export_dir", "load_method", "push_to_hub", "read_export",
           "read_tensors", "save_export", "write_export"]


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
        "method": method.export_settings(),
        "backbone": method.backbone.identity(),
        "template": method.train_classes.template,
        "dataset": method.train_classes.dataset,
        "classnames": list(method.train_classes.names),
        "package_version": package_version(),
        "git_commit": git_commit(),
        "training": training or {},
    }
    return {**config, "results": results} if results else config


def check_config(config: Any, at: str) -> dict[str, Any]:
    """``config`` when it matches the schema of ``prompt_config.json`` (``at``: the file, for messages): this
    ``format_version``; ``method`` an object with a ``name``; ``backbone`` an object with a ``model_name``;
    ``template`` a string; ``classnames`` distinct non-empty strings; ``dataset``, ``package_version``
    and ``git_commit`` strings or null; ``training`` and ``results`` objects or null; no other key."""
    fix = "Restore the file from the run's export/ or export the prompts again."
    expect(config, dict, at, "a JSON object", fix)
    if config.get("format_version") != FORMAT_VERSION:
        raise FormatError(f"{at} has format_version {config.get('format_version')!r}; this version of "
                          f"prompt_learning reads format_version {FORMAT_VERSION}.")
    check_keys(config, at, REQUIRED_KEYS, OPTIONAL_KEYS, fix)
    expect(config["method"], dict, f"{at}: method", "an object with the method's name and config", fix)
    expect(config["method"].get("name"), str, f"{at}: method.name", "the method's name", fix)
    expect(config["backbone"], dict, f"{at}: backbone", "an object: the backbone's identity", fix)
    expect(config["backbone"].get("model_name"), str, f"{at}: backbone.model_name", "an open_clip model name", fix)
    expect(config["template"], str, f"{at}: template", "the template string", fix)
    expect(config["classnames"], list, f"{at}: classnames", "a list of class names", fix)
    check_class_names(config["classnames"], [f"classnames[{i}]" for i in range(len(config["classnames"]))], at)
    for key in ("dataset", "package_version", "git_commit"):
        expect(config.get(key), (str, type(None)), f"{at}: {key}", "a string or null", fix)
    for key in ("training", "results"):
        expect(config.get(key), (dict, type(None)), f"{at}: {key}", "an object or null", fix)
    return config


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``prompts.safetensors`` file: a valid safetensors file of finite floating-point tensors."""
    try:
        tensors = load_file(path)
    except Exception as exc:  # safetensors' own errors: header too large, invalid JSON, truncated file...
        raise FormatError(f"{path} is not a valid safetensors file ({exc}); re-export the prompts.") from None
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise FormatError(f"{path}: tensor {key!r} has dtype {str(value.dtype).removeprefix('torch.')}; learned "
                              f"prompts are floating point (float32, float16 or bfloat16). Re-export the prompts.")
        if not bool(torch.isfinite(value).all()):
            raise FormatError(f"{path}: tensor {key!r} holds NaN or infinite values (the training diverged, or the "
                              f"file was damaged); re-export from a run whose loss stayed finite.")
    return tensors


def write_export(directory: Path, tensors: dict[str, Tensor], config: dict[str, Any],
                 repo_id: str | None = None) -> Path:
    """Write the three files of an export into ``directory``, each atomically (the config last, so that a
    reader never finds a config without its tensors); returns the directory. The config is checked first
    (``check_config``): nothing is written that ``read_export`` would refuse."""
    directory = Path(directory)
    check_config(config, str(directory / CONFIG_FILE))
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
    """The checked ``prompt_config.json`` of an export directory (``check_config``)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ConfigurationError(f"No {CONFIG_FILE} in {str(directory)!r}; point at a run's export directory.")
    return check_config(load_json_file(path, "export config", "Restore it from the run's export/ or export the "
                                       "prompts again."), str(path))


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
    tensors = read_tensors(tensors_path)
    try:
        method.load_tensors(tensors)
    except ConfigurationError as exc:
        raise FormatError(f"{tensors_path}: {exc} Re-export the prompts, or use the prompt_config.json written "
                          f"with them.") from None
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
