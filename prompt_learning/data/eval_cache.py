"""Decode evaluation images once: the test images of a dataset are decoded, resized and cropped once
per (image list, preprocess) and kept on disk as one uint8 array, then reused by every seed, method
and base/new half that evaluates on them (``data.eval_cache``; clear it by deleting ``data.cache_dir``).

The eval preprocess is split at its ``ToTensor`` step: the PIL part (resize, crop, RGB) is what the
cache stores, the tensor part (``/255``, normalise) runs on every read, so a cached image gives the
same tensor, bit for bit, as the uncached path.

A cache directory that cannot be written is warned about once and the images are decoded into memory for
the run (``feature_cache.cache_unwritable``); the file's blocks are reserved before any is written, so a
disk that fills up is that warning too, never a process killed by SIGBUS at a memory-mapped page.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import Compose

from prompt_learning.data.feature_cache import cache_unwritable
from prompt_learning.data.types import Datum, ImageLoader
from prompt_learning.errors import DataError
from prompt_learning.files import discard, remove_leftovers, temporary_path
from prompt_learning.progress import Progress

log = logging.getLogger(__name__)
STALE_TEMP_S = 24 * 3600  # a decode's temporary file untouched this long was left by a killed process


def split_preprocess(preprocess: Callable) -> tuple[Callable, Callable] | None:
    """(PIL stage, tensor stage) of a torchvision ``Compose`` with a ToTensor step; None otherwise."""
    steps = list(getattr(preprocess, "transforms", []))
    cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    if cut is None:
        return None
    rest = Compose(steps[cut + 1 :])

    def to_tensor(array: Tensor) -> Tensor:  # (H, W, 3) uint8 -> normalised (3, H, W), as ToTensor + rest
        return rest(array.permute(2, 0, 1).float().div(255))

    return Compose(steps[:cut]), to_tensor


class _Decode(Dataset):
    def __init__(self, refs: Sequence[str], load_image: ImageLoader, pil_stage: Callable) -> None:
        self.refs, self.load_image, self.pil_stage = refs, load_image, pil_stage

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Tensor:
        try:
            image = self.pil_stage(self.load_image(self.refs[i]))
        except Exception as exc:
            raise DataError(f"Cannot read image {self.refs[i]!r}: {exc}. Remove or replace the file.") from None
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # (H, W, 3)


def cache_key(refs: Sequence[str], pil_stage: Callable, identity: str) -> str:
    digest = hashlib.sha256(f"{identity}\n{pil_stage!r}\n".encode())
    for ref in refs:
        digest.update(ref.encode() + b"\n")
        if os.path.isfile(ref):  # files: a change of size or time invalidates the entry
            stat = os.stat(ref)
            digest.update(f"{stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _disk_array(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, Path]:
    """A uint8 array of ``shape`` memory-mapped from a temporary file beside ``path``, its blocks reserved up
    front: a full disk fails here with ``OSError`` instead of killing the process with SIGBUS at a page write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # of decodes killed long ago, not of running ones (maybe someone else's)
        remove_leftovers(path.parent, older_than_s=STALE_TEMP_S)
    tmp = temporary_path(path)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        if hasattr(os, "posix_fallocate"):
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # unsupported: write as before
                    raise OSError(exc.errno, exc.strerror, str(path)) from exc
            finally:
                os.close(fd)
    except BaseException:
        discard(tmp)
        raise
    return out, tmp


def decoded_images(refs: Sequence[str], load_image: ImageLoader, pil_stage: Callable, cache_dir: Path,
                   identity: str = "", num_workers: int = 0) -> np.ndarray:
    """(N, H, W, 3) uint8 array of ``refs`` after ``pil_stage``, memory-mapped from the cache (built once,
    written atomically, so concurrent runs never read a half-written file). A cache directory that cannot be
    written (read-only, full, not a directory) is warned about once and the images are decoded into memory."""
    path = Path(cache_dir) / f"{cache_key(refs, pil_stage, identity)}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    loader = DataLoader(_Decode(refs, load_image, pil_stage), batch_size=64, num_workers=num_workers)
    out: np.ndarray | None = None
    tmp: Path | None = None
    start = 0
    try:
        with Progress(f"Decoding {len(refs)} evaluation images into the cache", len(refs), "img") as progress:
            for batch in loader:  # (b, H, W, 3)
                if out is None:
                    shape = (len(refs), *batch.shape[1:])
                    try:
                        out, tmp = _disk_array(path, shape)
                    except OSError as exc:
                        cache_unwritable("evaluation image cache", Path(cache_dir), exc)
                        out = np.empty(shape, dtype=np.uint8)
                out[start : start + len(batch)] = batch.numpy()
                start += len(batch)
                progress.advance(len(batch))
        assert out is not None
        if tmp is None:
            return out
        try:
            out.flush()
            os.replace(tmp, path)
        except OSError as exc:
            cache_unwritable("evaluation image cache", Path(cache_dir), exc)
            return np.array(out)
    finally:
        del out  # unmapped before its file goes
        if tmp is not None:
            discard(tmp)  # a failed or interrupted decode's (after the rename: nothing)
    log.info("Decoded %d evaluation images once into %s", len(refs), path)
    return np.load(path, mmap_mode="r")


class CachedImageDataset(Dataset):
    """``(image, label)`` pairs of ``items`` read from a decoded-image array (rows found by ``ref``)."""

    def __init__(self, items: Sequence[Datum], array: np.ndarray, rows: dict[str, int], tensor_stage: Callable) -> None:
        self.items, self.array, self.rows, self.tensor_stage = list(items), array, rows, tensor_stage

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        item = self.items[i]
        pixels = torch.from_numpy(np.array(self.array[self.rows[item.ref]]))  # (H, W, 3) uint8
        return self.tensor_stage(pixels), item.label
