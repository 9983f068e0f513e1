"""Files on disk, below every other layer: atomic writes (results, exports and checkpoints are either complete
or absent, never half-written), the clean-up of what a killed write left behind, and the suffixes that make a
file an image (datasets, batch prediction).

Every temporary file or directory written here ends in :data:`TEMP_SUFFIX` and starts with a dot, beside
its final path: a process killed mid-write leaves only such names, which :func:`remove_leftovers` finds
and removes on the next start (``run_point`` does it under the run directory's lock).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
"""Lower-case file suffixes read as images (``dataset=folder``, ``scripts/predict.py``)."""

TEMP_SUFFIX = ".pl-tmp"
"""The suffix of every temporary file and directory of an atomic write (``.<name>.<random>.pl-tmp``)."""

MIN_FREE_BYTES = 1 << 20
"""Less free space than this (1 MiB) on an output disk is a full disk, refused before a run starts."""

_LEGACY_TEMP_SUFFIX = ".tmp"  # ``.<name>.<random>.tmp``: the temporary files of earlier versions


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (``os.umask`` can only swap it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _named(exc: OSError, path: Path, staging: Path | None = None) -> OSError:
    """``exc`` naming ``path`` (the file being written) when it names no file or only our temporary one:
    ``write`` and ``fsync`` report ENOSPC without a name, and the user knows the final name, not ours. A
    name inside ``staging`` (:func:`atomic_directory`) becomes the same name inside ``path``."""
    name = exc.filename
    if staging is not None and name is not None and Path(str(name)).is_relative_to(staging):
        name = str(path / Path(str(name)).relative_to(staging))
    elif name is None or str(name).endswith(TEMP_SUFFIX):
        name = str(path)
    if name == exc.filename:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), name)


def discard(path: Path) -> None:
    """Remove the file ``path`` if it is there; a failure to do so is not an error (it is a leftover that
    :func:`remove_leftovers` removes later)."""
    with contextlib.suppress(OSError):
        Path(path).unlink(missing_ok=True)


def temporary_path(path: Path) -> Path:
    """A unique, recognisable temporary name beside ``path`` (``.<name>.<pid>-<random>.pl-tmp``), not created."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that becomes ``path`` when the ``with`` block ends without error: written to a temporary
    file beside it, flushed and fsynced, then renamed into place. On any error (a full disk, an interrupt)
    the temporary file is removed, ``path`` keeps its previous content, and an ``OSError`` names ``path``.
    The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not 0600, so
    that results, exports and checkpoints stay readable by the rest of a shared group."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                fd = -1  # closed with f
                yield f
                f.flush()
                os.fsync(f.fileno())
        finally:
            if fd >= 0:
                os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        discard(tmp)
        named = _named(exc, path)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        discard(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """``obj`` as indented JSON in ``path``, written atomically (:func:`atomic_file`)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def _old_copy(target: Path) -> Path:
    """Where :func:`atomic_directory` sets the previous directory aside for the moment of the swap."""
    return target.with_name(f".{target.name}.old{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """An empty directory beside ``target`` to fill in the ``with`` block; when the block ends without error it
    replaces ``target`` (two renames: the old directory aside, the new one in; a kill between the two leaves
    the old one as ``.<name>.old.pl-tmp``, which :func:`remove_leftovers` moves back). On an error the new
    directory is removed and ``target`` keeps its previous files; an ``OSError`` names ``target``."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.{os.getpid()}-{os.urandom(4).hex()}{TEMP_SUFFIX}")
    try:
        staging.mkdir(parents=True)  # the mode mkdir gives (0777 less the umask)
        yield staging
        old = _old_copy(target)
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        named = _named(exc, target, staging)
        if named is exc:
            raise
        raise named from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is named as the temporary file or directory of an atomic write."""
    name = path.name
    return name.startswith(".") and (name.endswith(TEMP_SUFFIX) or (name.endswith(_LEGACY_TEMP_SUFFIX)
                                                                   and name.count(".") >= 3))


def remove_leftovers(directory: Path, older_than_s: float | None = None) -> list[Path]:
    """Remove what killed atomic writes left in ``directory`` and below it; return the paths removed.

    ``older_than_s``: only leftovers not modified for that long (a directory that other processes write
    into at the same time, such as a shared cache); None: all of them (a directory this process holds the
    lock of). An old directory set aside by :func:`atomic_directory` whose replacement never arrived is
    moved back instead."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    now = time.time()
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts)):
        if not is_leftover(path) or not path.exists():
            continue
        try:
            if older_than_s is not None and now - path.lstat().st_mtime < older_than_s:
                continue
            original = path.with_name(path.name[1:].removesuffix(f".old{TEMP_SUFFIX}"))
            if path.name.endswith(f".old{TEMP_SUFFIX}") and path.is_dir() and not original.exists():
                os.replace(path, original)
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT,):
                raise
    return removed


def check_writable_directory(path: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise the ``OSError`` that creating ``path`` (a directory) and files in it would meet, without creating
    anything: its nearest existing ancestor must be a directory this process may write into, on a disk with
    at least ``min_free_bytes`` free."""
    path = Path(path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    disk = os.statvfs(existing) if hasattr(os, "statvfs") else None  # not on Windows
    if not os.access(existing, os.W_OK | os.X_OK):
        code = errno.EROFS if disk is not None and disk.f_flag & os.ST_RDONLY else errno.EACCES
        raise OSError(code, os.strerror(code), str(path))
    if disk is not None and disk.f_bavail * disk.f_frsize < min_free_bytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
