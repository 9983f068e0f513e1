"""Progress of the long waits outside Lightning's loops (decoding test images, encoding cached features,
verifying images, loading a backbone): what is being done, how many of how many, the rate and the ETA.

Everything goes to stderr, so stdout keeps only results. On a terminal a transient rich bar is drawn; when
stderr is a file or a pipe (a batch job's log) plain lines are written instead, the first after 2 s
(``PLAIN_FIRST_LINE_S``) and then every 10 s (every minute after the first minute), so a log shows what a
long phase is doing without carriage returns or ANSI codes. A phase that took 2 s or more ends with one
summary line (``Decoding 90 evaluation images into the cache: 90/90 in 12 s (7.3 img/s)``); a quick one
prints nothing.

One switch turns all of it off: :func:`set_progress` (the engine sets it from ``trainer.enable_progress_bar``,
the same key that turns Lightning's bar off). Only the first process of a distributed run
(``RANK``/``LOCAL_RANK`` unset or 0) shows progress. Library code only: no Lightning, no Hydra.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Generic, TypeVar

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn
from rich.progress import Progress as RichProgress
from rich.table import Column
from rich.text import Text

T = TypeVar("T")

_enabled = True
_open: list[Progress] = []  # the phases shown in this process, innermost last
PLAIN_FIRST_LINE_S = 2.0  # plain mode: nothing for quick phases; the first line after this many seconds


def set_progress(enabled: bool) -> None:
    """Show (True) or hide (False) the progress of every later phase in this process."""
    global _enabled
    _enabled = bool(enabled)


@contextmanager
def progress_setting(enabled: bool) -> Iterator[None]:
    """:func:`set_progress` for the duration of a ``with`` block, restored afterwards."""
    before = _enabled
    set_progress(enabled)
    try:
        yield
    finally:
        set_progress(before)


def is_rank_zero() -> bool:
    """False in every process of a distributed run but the first (by the launcher's environment)."""
    return all(os.environ.get(var, "0") in ("", "0") for var in ("RANK", "LOCAL_RANK"))


def progress_enabled() -> bool:
    """Whether progress is shown here: the switch is on and this is the first process."""
    return _enabled and is_rank_zero()


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``35 s``, ``3:05``, ``1:02:03``."""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_rate(count: float, seconds: float, unit: str = "it") -> str:
    """The rate of ``count`` units done in ``seconds``: ``12.3 img/s``, or ``4.2 s/img`` below one per
    second; an empty string while it is unknown (nothing done yet), never ``0.00it/s``."""
    if count <= 0 or seconds <= 0:
        return ""
    rate = count / seconds
    if rate >= 1:
        return f"{rate:.0f} {unit}/s" if rate >= 100 else f"{rate:.1f} {unit}/s"
    return f"{1 / rate:.1f} s/{unit}"


class _StatusColumn(ProgressColumn):
    """The rich bar's text after the bar: the same counts, rate and ETA as a plain line."""

    def __init__(self, owner: Progress) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))
        self.owner = owner

    def render(self, task: Task) -> Text:
        return Text(self.owner.status())


class Progress:
    """A counted (or, with ``total=None``, open-ended) wait, shown while the ``with`` block runs::

        with Progress("Decoding 90 test images", total=90, unit="img") as progress:
            for batch in loader:
                ...
                progress.advance(len(batch))

    ``unit`` names one counted thing in the rate (``img/s``), ``noun`` the counts if the description does
    not (``1/2 batches``). ``enabled`` None follows :func:`progress_enabled`; ``live`` None draws a rich bar
    when ``stream`` is a terminal and writes plain lines otherwise. ``completed`` counts work already done
    before this start (a resumed run), which the rate leaves out.

    Phases nest (a stage around the loaders it reads): only the innermost open one is shown; the outer one
    shows again when it ends.
    """

    def __init__(self, description: str, total: int | None = None, unit: str = "it", *, noun: str = "",
                 completed: int = 0, enabled: bool | None = None, live: bool | None = None,
                 stream: IO[str] | None = None, min_seconds: float | None = None) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.noun = f" {noun}" if noun else ""  # after the counts: ``1/2 batches``
        self.completed, self._initial = completed, completed
        self.postfix = ""
        self.enabled = progress_enabled() if enabled is None else enabled
        self.stream = stream if stream is not None else sys.stderr
        self.console = Console(file=self.stream, highlight=False)
        self.live = self.console.is_terminal if live is None else live
        self.min_seconds = PLAIN_FIRST_LINE_S if min_seconds is None else min_seconds
        self._start = 0.0
        self._last = 0.0  # seconds from the start to the last update
        self._bar: RichProgress | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- what is shown ---------------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start if self._start else 0.0

    def status(self) -> str:
        """``40/90 (44%), 12 img/s, ETA 4.2 s; <postfix>`` (the parts known so far). The rate is that of the
        work done up to the last update, and the ETA counts down from it between updates."""
        elapsed, done, last = self.elapsed, self.completed - self._initial, self._last
        rate = format_rate(done, last, self.unit)
        if self.total:
            parts = [f"{self.completed}/{self.total}{self.noun} ({100 * self.completed / self.total:.0f}%)"]
        else:
            parts = [f"{self.completed} {self.unit}"] if self.completed else []
        if rate:
            parts.append(rate)
        if self.total and rate and self.completed < self.total:
            eta = (self.total - self.completed) * last / done - (elapsed - last)
            parts.append(f"ETA {format_duration(eta)}")
        else:
            parts.append(f"{format_duration(elapsed)} elapsed")
        text = ", ".join(parts)
        return f"{text}; {self.postfix}" if self.postfix else text

    def line(self) -> str:
        """The plain line of the current state."""
        return f"{self.description}: {self.status()}"

    def summary(self) -> str:
        """The line printed when a phase that took long enough ends."""
        elapsed, done = self.elapsed, self.completed - self._initial
        count = f"{self.completed} {self.unit}" if done else "done"
        if self.total:
            count = f"{self.completed}/{self.total}{self.noun}"
        rate = format_rate(done, elapsed, self.unit)
        text = f"{self.description}: {count} in {format_duration(elapsed)}" + (f" ({rate})" if rate else "")
        return f"{text}; {self.postfix}" if self.postfix else text

    # -- updates ---------------------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.completed += n
        self._last = self.elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=self.completed)

    def set_postfix(self, text: str) -> None:
        """Extra text after the counts (e.g. the current epoch and metrics)."""
        self.postfix = text

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _plain_lines(self) -> None:
        wait = self.min_seconds
        while not self._stop.wait(wait):
            if _open and _open[-1] is self:  # an inner phase speaks for itself
                self._write(self.line())
            wait = 10.0 if self.elapsed < 60 else 60.0

    # -- lifetime --------------------------------------------------------------------------------------
    def start(self) -> Progress:
        self._start = time.monotonic()
        if not self.enabled:
            return self
        if _open and _open[-1]._bar is not None:
            _open[-1]._bar.stop()  # hidden while this inner phase runs
        _open.append(self)
        if self.live:
            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(bar_width=20), _StatusColumn(self),
                                     console=self.console, transient=True)
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.completed)
            self._bar.start()
        else:
            self._thread = threading.Thread(target=self._plain_lines, name="progress-lines", daemon=True)
            self._thread.start()
        return self

    def close(self, report: bool = True) -> None:
        """Stop showing; print the summary line when the phase took at least ``min_seconds``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if report and self.elapsed >= self.min_seconds:
            self._write(self.summary())
        self.enabled = False  # closed once
        if self in _open:
            _open.remove(self)
        if _open and _open[-1]._bar is not None:
            _open[-1]._bar.start()

    def __enter__(self) -> Progress:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(report=exc_type is None)


def batch_size_of(batch: Any) -> int:
    """The number of samples in a batch: the length of its last element (labels) or of the batch itself."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[-1]
    try:
        return len(batch)
    except TypeError:
        return 1


class Tracked(Generic[T]):
    """``items`` shown as progress each time they are iterated (a data loader read by a run stage); each
    item counts ``count(item)`` units (default 1). ``len()`` and other attributes are the wrapped object's."""

    def __init__(self, items: Iterable[T], description: str, total: int | None = None, unit: str = "it",
                 count: Callable[[T], int] | None = None) -> None:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        self.items, self.description, self.total, self.unit, self.count = items, description, total, unit, count

    def __iter__(self) -> Iterator[T]:
        with Progress(self.description, self.total, self.unit) as progress:
            for item in self.items:
                yield item
                progress.advance(self.count(item) if self.count is not None else 1)

    def __len__(self) -> int:
        return len(self.items)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if "items" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["items"], name)


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "it",
          count: Callable[[T], int] | None = None) -> Tracked[T]:
    """Iterate over ``items`` showing progress (see :class:`Tracked`)."""
    return Tracked(items, description, total, unit, count)
