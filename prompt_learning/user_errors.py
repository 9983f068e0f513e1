"""Scripts report a user's error as one ``error:`` line on stderr and exit with status 2, no traceback.

User errors are :class:`~prompt_learning.errors.PromptLearningError`, when Hydra is in use its composition
errors, and the operating system's refusals to store a file (a read-only or full disk, a file where a
directory should be): :func:`storage_error` turns those into a :class:`~prompt_learning.errors.StorageError`
naming the path and the setting that moves it. Hydra is never imported here: its error types are looked up
only if it is loaded, so the export and predict scripts stay free of it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from prompt_learning.errors import PromptLearningError, StorageError

STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                            errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.EIO})
"""``errno`` values of an ``OSError`` that mean "this file cannot be stored there", not a bug."""


class Place(NamedTuple):
    """A directory a run writes below and the setting that moves it (``paths.output_dir``), with its
    environment variable if it has one (``PL_OUTPUT_DIR``)."""

    path: Path
    setting: str
    variable: str | None = None
    hint: str | None = None  # the fix in words, instead of "set <setting>=<...>"


def _within(path: Path, root: Path) -> bool:
    try:
        path.absolute().relative_to(root.expanduser().absolute())
    except ValueError:
        return False
    return True


def _blocker(path: Path) -> Path:
    """The nearest existing ancestor of ``path`` (or itself): the file in the way of ENOTDIR / EEXIST."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def storage_error_message(exc: OSError, places: Sequence[Place] = ()) -> str | None:
    """One line for an ``OSError`` that stops a file from being stored: what happened to which path, and the
    fix (the setting of the first of ``places`` that holds the path). None for other errors."""
    if exc.errno not in STORAGE_ERRNOS or exc.filename is None:
        return None
    path = Path(str(exc.filename))
    place = next((p for p in places if _within(path, Path(p.path))), None)
    kind = {errno.ENOSPC: "room", errno.EDQUOT: "room", errno.EFBIG: "room", errno.ENOTDIR: "dir",
            errno.EEXIST: "dir", errno.EISDIR: "dir", errno.ENAMETOOLONG: "name"}.get(exc.errno, "writable")
    what = {"room": "a directory with free space", "dir": "a directory", "name": "a shorter directory",
            "writable": "a writable directory"}[kind]
    move = ""
    if place is not None and place.hint:
        move = place.hint
    elif place is not None:
        move = f"set {place.setting}=<{what}>" + (f" (or the {place.variable} variable)" if place.variable else "")
    blocker = _blocker(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        problem, fixes = f"cannot write {path}: {exc.strerror or 'no space left'}", ["free space on its disk", move]
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST):
        if blocker.is_dir():
            return None  # not a file in the way: some other error
        needed = "" if blocker == path else f" for {path}"
        problem, fixes = f"{blocker} is a file, where a directory is needed{needed}", [f"move {blocker} away", move]
    elif exc.errno == errno.EISDIR:
        problem, fixes = f"{path} is a directory, where a file is needed", [f"move {path} away", move]
    elif exc.errno == errno.ENAMETOOLONG:
        problem, fixes = f"the path {path} is too long", [move or "choose a shorter path"]
    elif exc.errno == errno.EROFS:
        problem, fixes = f"cannot write {path}: read-only file system", [move or "choose a writable disk"]
    elif exc.errno == errno.EIO:
        problem, fixes = f"input/output error on {path} (a failing disk or network file system)", ["check that disk",
                                                                                                 move]
    elif place is not None:  # EACCES, EPERM below an output directory: writing
        problem, fixes = f"cannot write {path}: permission denied", [f"make {blocker} writable for this user", move]
    else:
        problem, fixes = f"permission denied: {path}", [f"check the permissions of {blocker}"]
    fix = " or ".join(f for f in fixes if f)
    return f"{problem}. {fix[0].upper()}{fix[1:]}." if fix else f"{problem}."


def storage_error(exc: BaseException, places: Sequence[Place] = ()) -> BaseException:
    """``exc`` as a :class:`StorageError` when it is an ``OSError`` that stops a file from being stored (the
    ``OSError`` kept as its ``os_error``); any other exception unchanged."""
    if isinstance(exc, OSError) and (message := storage_error_message(exc, places)) is not None:
        error = StorageError(message)
        error.os_error = exc
        return error
    return exc


def user_error_types() -> tuple[type[BaseException], ...]:
    """Ours, plus Hydra's and OmegaConf's composition errors when those packages are loaded."""
    types: list[type[BaseException]] = [PromptLearningError]
    for module, name in (("hydra.errors", "HydraException"), ("omegaconf.errors", "OmegaConfBaseException")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            types.append(getattr(loaded, name))
    return tuple(types)


def user_error_message(exc: BaseException) -> str:
    """The one line shown for ``exc``: its message without Hydra's search-path dump, plus its cause."""
    message = str(exc).split("\nConfig search path:")[0].strip()
    if exc.__cause__ is not None and str(exc.__cause__) not in message:
        message += f": {str(exc.__cause__).splitlines()[0]}"
    return message


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 2, without a traceback. An ``OSError`` that
    stops a file from being stored counts as one (:func:`storage_error`)."""
    try:
        yield
    except Exception as exc:
        shown = storage_error(exc)
        if not isinstance(shown, user_error_types()):
            raise
        logging.getLogger("prompt_learning").debug("user error", exc_info=True)
        print(f"error: {user_error_message(shown)}", file=sys.stderr)
        sys.exit(2)
