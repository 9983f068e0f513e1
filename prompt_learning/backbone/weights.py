"""Resolve ``backbone.pretrained`` (an open_clip tag, a local checkpoint file, or none) before loading.

A pretrained-tag lookup with no network makes the Hugging Face client retry for most of a minute.
We check the local cache and the hub's reachability first, so a user without access gets one clear
message within seconds: the model, the tag, and how to point ``backbone.pretrained`` at a file.

Weights are identified without saying where they were loaded from (results and exports move between
machines): a tag by its name, the packaged tiny CLIP by ``packaged``, a local checkpoint by its file
name and sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import socket
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import open_clip

from prompt_learning.backbone.tiny import packaged_weights
from prompt_learning.errors import BackboneWeightsError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz", ".ckpt")
HUB_HOST = ("huggingface.co", 443)


PACKAGED_TAG = "packaged"  # the pseudo tag of the shipped tiny_synthetic weights
LOCAL_FILE_SETTING = "backbone.pretrained=/path/to/file.safetensors (or .pt)"  # how a run points at a file


@dataclass(frozen=True)
class ResolvedWeights:
    """What to pass to open_clip, and how the weights are identified in results and exports."""

    open_clip_arg: str | None  # tag or file path handed to ``create_model(pretrained=...)``
    tag: str | None = None  # an open_clip tag, or ``packaged`` for the shipped weights
    checkpoint: str | None = None  # where the checkpoint file was read from (messages only, never recorded)
    checkpoint_sha256: str | None = None
    quick_gelu: bool = False  # the tag was trained with QuickGELU activations

    @property
    def checkpoint_name(self) -> str | None:
        """The checkpoint's file name: with its sha256, what identifies local weights (no directory)."""
        return None if self.checkpoint is None else Path(self.checkpoint).name


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's content; remembered per (real path, size, mtime) within the process, so a
    checkpoint checked before loading is not read twice."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


TORCHSCRIPT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
CONVERTED_DIR = Path(os.environ.get("PL_CACHE_DIR", Path.home() / ".cache" / "prompt_learning")) / "converted"


def is_torchscript_archive(path: Path) -> bool:
    """OpenAI's released ``ViT-B-16.pt`` files are TorchScript archives (they hold ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def plain_checkpoint(path: Path, sha256: str) -> Path:
    """A safetensors copy of a TorchScript archive's weights (made once, cached by the archive's sha256),
    because open_clip loads checkpoints with ``torch.load(weights_only=True)``, which refuses TorchScript."""
    if not is_torchscript_archive(path):
        return path
    out = CONVERTED_DIR / f"{sha256}.safetensors"
    if not out.is_file():
        import torch
        from safetensors.torch import save

        from prompt_learning.files import atomic_write_bytes

        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        tensors = {k: v.contiguous() for k, v in state.items() if k not in TORCHSCRIPT_EXTRA_KEYS}
        atomic_write_bytes(out, save(tensors))
    return out


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.startswith(("~", ".")) or value.endswith(CHECKPOINT_SUFFIXES)


def _hint(model_name: str, point_at: str) -> str:
    return (f"Point at a local checkpoint instead: {point_at}, for example a file saved from "
            f"open_clip.create_model({model_name!r}, pretrained=TAG) on a machine with internet access.")


def _in_local_cache(cfg: dict, cache_dir: str | None) -> bool:
    """True if open_clip would find the tag's weights without a network access."""
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(repo_id, n, cache_dir=cache_dir), str) for n in names):
            return True
    url = cfg.get("url", "")
    url_cache = Path(cache_dir or Path.home() / ".cache" / "clip")
    return bool(url) and (url_cache / os.path.basename(url)).is_file()


def _hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as exc:
        return f"the model hub is unreachable ({exc.__class__.__name__}: {exc})"
    return None


def resolve_pretrained(model_name: str, pretrained: str | None, cache_dir: str | None = None,
                       point_at: str = LOCAL_FILE_SETTING) -> ResolvedWeights:
    """Check that ``pretrained`` can be loaded for ``model_name`` and say how to identify it.

    ``point_at`` is how the caller's user points at a local file instead of a tag (in the messages)."""
    if pretrained in (None, "", "none", "None", "random"):
        return ResolvedWeights(open_clip_arg=None)
    try:
        packaged = packaged_weights(pretrained, model_name)
    except ValueError as exc:
        raise BackboneWeightsError(str(exc)) from None
    path = packaged or (Path(pretrained).expanduser() if _looks_like_path(pretrained) else None)
    if path is not None:
        if not path.is_file():
            raise BackboneWeightsError(f"Checkpoint file {str(path)!r} for backbone {model_name!r} does not exist. "
                                       f"Fix backbone.pretrained (an open_clip tag or a path to a file).")
        digest = sha256_of(path)
        return ResolvedWeights(open_clip_arg=str(plain_checkpoint(path, digest)), checkpoint=str(path),
                               checkpoint_sha256=digest, tag=PACKAGED_TAG if pretrained == PACKAGED_TAG else None)
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise BackboneWeightsError(f"Unknown pretrained tag {pretrained!r} for open_clip model {model_name!r}. "
                                   f"Known tags: {tags or 'none'}. {_hint(model_name, point_at)}")
    if not _in_local_cache(cfg, cache_dir) and (reason := _hub_unreachable_reason()):
        raise BackboneWeightsError(f"Cannot load the pretrained weights of open_clip model {model_name!r} with tag "
                                   f"{pretrained!r}: they are not in the local cache and cannot be downloaded "
                                   f"({reason}). {_hint(model_name, point_at)}")
    return ResolvedWeights(open_clip_arg=pretrained, tag=pretrained, quick_gelu=bool(cfg.get("quick_gelu")))


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Drop open_clip's "No pretrained weights loaded ... initialized randomly" notice (logged on the root
    logger) while building a model whose weights are loaded afterwards, so users are not told the opposite."""
    root, notice = logging.getLogger(), _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def check_checkpoint_fits(path: str, model_name: str, shown_as: str) -> None:
    """Refuse a checkpoint saved from another architecture, naming a tensor whose shape differs.

    Positional embeddings are skipped (open_clip resizes them for another image size) and so are
    tensors of equal size (open_clip reshapes e.g. a scalar logit_scale)."""
    with _quiet_random_init():  # open_clip would log "initialized randomly" for this shapes-only model
        model = open_clip.create_model(model_name, pretrained=None, device="meta")  # shapes only, no memory
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in checkpoint_shapes(path).items():
        want = expected.get(key)
        if want is not None and not key.endswith("positional_embedding") and shape != want \
                and math.prod(shape) != math.prod(want):
            raise BackboneWeightsError(
                f"Checkpoint {shown_as!r} does not fit open_clip model {model_name!r}: {key!r} has shape "
                f"{shape} in the file and {want} in the model. It was saved from another architecture; set "
                f"backbone.model to the one it was saved from.")


def checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of a checkpoint; safetensors headers are read without loading the tensors."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    return {k: tuple(v.shape) for k, v in open_clip.factory.load_state_dict(path).items()}
