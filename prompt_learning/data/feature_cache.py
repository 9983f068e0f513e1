"""Frozen image features cached on disk (docs/performance.md, cached features).

For methods whose image features do not depend on learned state (``touches_image_tower=False``), the
normalised features of an evaluation split are computed once per (backbone weights, image list,
preprocess) and reused by every later seed, method and re-evaluation on that split; evaluation then
costs only the text side. Files are ``<key>.safetensors`` with one (N, D) float32 tensor, written
atomically.

A cache directory that cannot be written (read-only, full, a file in the way: ``data.cache_dir`` or
``PL_CACHE_DIR`` on an unwritable disk, an unwritable ``HOME``) is not an error: the run goes on without
the cache after one warning per directory (:func:`cache_unwritable`) that names it and the setting.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor
from torch.utils.data import DataLoader

from prompt_learning.data.image_dataset import ImageDataset
from prompt_learning.data.types import Datum, ImageLoader
from prompt_learning.files import atomic_write_bytes
from prompt_learning.progress import Progress

log = logging.getLogger(__name__)
_unwritable: set[str] = set()  # cache directories already warned about in this process


def cache_unwritable(what: str, directory: Path, exc: OSError) -> None:
    """Say once per directory that a disk cache cannot be written there and that the run goes on without it."""
    if str(directory) in _unwritable:
        log.debug("%s still cannot be written: %s", directory, exc)
        return
    _unwritable.add(str(directory))
    reason = exc.strerror or str(exc)
    log.warning("The %s %s cannot be written (%s); going on without it. Set data.cache_dir=<a writable "
                "directory> (or the PL_CACHE_DIR variable) to keep it, or data.eval_cache=false.", what, directory,
                reason[:1].lower() + reason[1:])


def store_in_cache(path: Path, data: bytes, what: str) -> bool:
    """Write a cache entry atomically; False (after :func:`cache_unwritable`) when its directory cannot hold it."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        cache_unwritable(what, Path(path).parent, exc)
        return False
    return True


def feature_key(identity: dict, refs: Sequence[str], preprocess: Callable, loader_identity: str) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    digest.update(f"\n{preprocess!r}\n{loader_identity}\n".encode())
    for ref in refs:
        digest.update(ref.encode() + b"\n")
    return digest.hexdigest()[:24]


@torch.no_grad()
def cached_image_features(encode: Callable[[Tensor], Tensor], identity: dict, items: Sequence[Datum],
                          load_image: ImageLoader, preprocess: Callable, cache_dir: Path, device: torch.device,
                          batch_size: int = 100, num_workers: int = 0, name: str = "") -> Tensor:
    """(N, D) ``encode(images)`` of ``items`` in order: read from the cache, or computed once and stored
    (``name``: the eval set's, in the progress shown meanwhile)."""
    loader_identity = getattr(load_image, "__qualname__", None) or repr(load_image)
    path = Path(cache_dir) / f"{feature_key(identity, [d.ref for d in items], preprocess, loader_identity)}.safetensors"
    if path.is_file():
        return load_file(path)["features"].to(device)
    loader = DataLoader(ImageDataset(items, load_image, preprocess), batch_size=batch_size, num_workers=num_workers)
    parts = []
    what = f"{len(items)} evaluation images" + (f" ({name})" if name else "")
    with Progress(f"Encoding {what} into the feature cache", len(items), "img") as progress:
        for images, _ in loader:
            parts.append(encode(images.to(device)).float().cpu())  # (B, D)
            progress.advance(len(images))
    features = torch.cat(parts)  # (N, D)
    if store_in_cache(path, save({"features": features.contiguous()}), "image feature cache"):
        log.info("Cached %d image features in %s", len(items), path)
    return features.to(device)
