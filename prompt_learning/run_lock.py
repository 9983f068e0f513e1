"""One run per run directory: ``<run_dir>/.lock``, held for the whole run.

The lock is an ``fcntl.flock`` on the file, which the operating system releases when its holder exits,
however it exits, plus the holder's pid, host and start time written inside, so that a refused run can
say who holds the directory. A second run on the directory is refused (:class:`RunDirectoryLocked`) and
writes nothing there. A lock file left by a holder that is gone is taken over with a warning: on this host
when its flock is free (the holder died without releasing it); a lock file written on another host is
refused even when its flock is free, because network file systems mounted without lock support report
every flock as free. Delete that file by hand once its run is known to be gone.

Imports only the standard library and :mod:`prompt_learning.errors` (a test's helper process loads it in
well under a second).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from prompt_learning.errors import RunDirectoryInUse

try:
    import fcntl
except ImportError:  # no flock (Windows): the recorded holder decides alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)  # flock unsupported (some network file systems)
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "PMI_RANK", "OMPI_COMM_WORLD_RANK")


class RunDirectoryLocked(RunDirectoryInUse):
    """Another process holds the run directory's lock; nothing was run and nothing is written there."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def is_secondary_rank() -> bool:
    """Whether this process is a non-zero rank of a distributed run: rank 0 holds the lock for all ranks."""
    return any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _unlock(fd: int) -> None:
    """Release the flock on ``fd`` (if any) and close it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_holder(path: Path) -> dict[str, Any]:
    """The holder recorded in a lock file (``pid``, ``host``, ``started_at``); empty when there is none."""
    try:
        holder = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host gpu-7 since 2026-01-02T03:04:05+00:00`` (what is known of it)."""
    if not holder:
        return "another process (which has not written its name yet)"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"since {holder.get('started_at', '?')}")


class RunLock:
    """The exclusive lock of one run directory (created if missing); a context manager.

    ``what``: the holder's task, recorded in the lock file (``train``, ``eval``); ``elsewhere``: how a refused
    run goes somewhere else instead of waiting, in the refusal's message."""

    def __init__(self, run_dir: Path, what: str = "run",
                 elsewhere: str | None = "set paths.output_dir=<another directory> to run there") -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.what, self.elsewhere = what, elsewhere
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the stale holder replaced, if any

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirectoryLocked` naming the holder. ``OSError`` when the run
        directory or its lock file cannot be created or written (read-only, full, a file in the way)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = self._open()
        except OSError as exc:  # name the directory the user chose, not our file in it
            if exc.filename != str(self.path):
                raise
            raise OSError(exc.errno, exc.strerror, str(self.run_dir)) from exc
        for attempt in range(20):  # another process may delete the file between our open and our flock: retry
            if attempt:
                fd = self._open()
            flocked = fcntl is not None
            try:
                if flocked:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in NO_LOCKS:  # a file system without locks: the recorded holder decides alone
                    flocked = False
                else:
                    os.close(fd)
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise
                    raise self._refusal(self._recorded_holder(), running=True) from None
            if self._same_file(fd):
                break
            os.close(fd)
        else:
            raise RuntimeError(f"could not lock {self.path}: it keeps being replaced")
        try:
            self._take(fd, flocked)
        except BaseException as exc:
            _unlock(fd)
            if isinstance(exc, OSError) and exc.filename is None:  # a full disk: name the directory
                raise OSError(exc.errno, exc.strerror, str(self.run_dir)) from exc
            raise
        self._fd = fd
        return self

    def _open(self) -> int:
        return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def _recorded_holder(self) -> dict[str, Any]:
        """The holder in the lock file, waiting a moment for one that has just taken the lock to write it."""
        for _ in range(10):
            if holder := read_holder(self.path):
                return holder
            time.sleep(0.05)
        return {}

    def _same_file(self, fd: int) -> bool:
        """Whether the file we locked is still the one at ``self.path`` (a releasing holder unlinks it)."""
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def _take(self, fd: int, flocked: bool) -> None:
        """With the flock held: refuse a holder recorded from another host, take over one from this host
        (its flock is free, so it is gone), then record ourselves. Without flock support (``flocked``
        False) a recorded holder on this host is gone only when its pid is."""
        previous = read_holder(self.path)
        if previous:
            if previous.get("host") != socket.gethostname():
                raise self._refusal(previous, running=False)
            pid = previous.get("pid")
            alive = isinstance(pid, int) and _pid_alive(pid)
            if alive and not flocked:
                raise self._refusal(previous, running=True)
            gone = "holds no lock (its pid was reused)" if alive else "is no longer running"
            log.warning("Taking over the lock %s left by %s: that process %s.", self.path, describe(previous), gone)
            self.took_over = previous
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": datetime.now(UTC).isoformat(
            timespec="seconds"), "task": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)

    def _refusal(self, holder: dict[str, Any], running: bool) -> RunDirectoryLocked:
        who = describe(holder)
        otherwise = f", or {self.elsewhere}" if self.elsewhere else ""
        if running:
            return RunDirectoryLocked(
                f"{self.run_dir} is in use by {who} ({holder.get('task', 'a run')}); a second run there would "
                f"overwrite its results. Wait for it to finish{otherwise}.", holder)
        return RunDirectoryLocked(
            f"{self.run_dir} is locked by {who} ({holder.get('task', 'a run')}), on another host, which this "
            f"host cannot check. If that run is no longer running, delete {self.path} and run again; else wait "
            f"for it{otherwise}.", holder)

    def release(self) -> None:
        """Give the lock back (idempotent): the lock file is removed, then unlocked."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self._same_file(fd):
                self.path.unlink(missing_ok=True)
        except OSError as exc:  # a read-only remount or a full disk cannot keep the lock: the flock goes anyway
            log.debug("could not remove %s: %s", self.path, exc)
        finally:
            _unlock(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
