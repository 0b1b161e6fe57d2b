"""Progress reports for long commands, always on stderr (stdout carries JSON/CSV results).

On a terminal a tqdm bar; otherwise (CI logs, ``nohup``, pipes) a plain line at most every
``interval`` seconds plus a final line::

    evaluate: 1200/2995 faces (40%), 412 faces/s, eta 4s
    evaluate: 2995/2995 faces (100%), 409 faces/s, done in 7s

    with progress(len(faces), "evaluate", "face") as bar:
        for batch in batches:
            ...
            bar.update(len(batch))

    for path in progress(paths, "predict", "file"):
        ...

The CLI sets the defaults once with ``configure`` (``--no-progress``, ``-q``, ``--progress-interval``;
``tcdcn.cli.arguments``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TextIO, TypeVar

T = TypeVar("T")

DEFAULT_INTERVAL_S = 10.0
# Forces plain lines on a terminal too: worker processes sharing one terminal would garble each other's bars.
PLAIN_ENV = "TCDCN_PROGRESS_PLAIN"


@dataclass
class ProgressSettings:
    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S


_settings = ProgressSettings()


def configure(enabled: bool | None = None, interval_s: float | None = None) -> ProgressSettings:
    """Set the defaults every later ``progress`` uses; returns the current settings."""
    if enabled is not None:
        _settings.enabled = enabled
    if interval_s is not None:
        if not math.isfinite(interval_s) or interval_s < 0:
            raise ValueError(f"progress interval must be a finite number of seconds >= 0, not {interval_s}")
        _settings.interval_s = interval_s
    return _settings


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Backend:
    """The silent one: progress switched off."""

    def update(self, n: int) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def write(self, message: str) -> None:
        print(message, file=sys.stderr)

    def close(self, completed: bool) -> None:
        pass


class _LineWriter(_Backend):
    """Plain lines for logs: one at most every ``interval_s`` seconds, and a final one."""

    def __init__(self, desc: str, unit: str, total: int | None, interval_s: float, stream: TextIO,
                 clock: Callable[[], float]) -> None:
        self.desc, self.unit, self.total = desc, unit, total
        self.interval_s, self.stream, self.clock = interval_s, stream, clock
        self.done = 0
        self.start = self.last = clock()

    def set_total(self, total: int | None) -> None:
        self.total = total

    def update(self, n: int) -> None:
        self.done += n
        if self.total is not None and self.done >= self.total:
            return  # the final line follows on close; a 100% line just before it would repeat it
        now = self.clock()
        if now - self.last >= self.interval_s:
            self.last = now
            self._emit(now, final=False, completed=False)

    def write(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def close(self, completed: bool) -> None:
        if completed or self.done:  # a failure before any work is reported by its own error line
            self._emit(self.clock(), final=True, completed=completed)

    def line(self, now: float, final: bool, completed: bool) -> str:
        units = f"{self.unit}s"
        total = self.total if self.total is not None and self.total >= self.done else None
        text = f"{self.desc}: {self.done}/{total} {units}" if total is not None else f"{self.desc}: {self.done} {units}"
        if total:
            text += f" ({100 * self.done / total:.0f}%)"
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if rate >= 1:
            text += f", {rate:.0f} {units}/s" if rate >= 10 else f", {rate:.1f} {units}/s"
        elif rate > 0:  # slow units (training runs): time per unit reads better than a tiny rate
            text += f", {_duration(1 / rate)}/{self.unit}"
        if final:
            text += f", done in {_duration(elapsed)}" if completed else f", ended early after {_duration(elapsed)}"
        elif total is not None and rate > 0:
            text += f", eta {_duration((total - self.done) / rate)}"
        return text

    def _emit(self, now: float, final: bool, completed: bool) -> None:
        print(self.line(now, final, completed), file=self.stream, flush=True)


class _Bar(_Backend):
    """A tqdm bar; log records are routed above it so they do not tear it."""

    def __init__(self, desc: str, unit: str, total: int | None, stream: TextIO) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect: AbstractContextManager[Any] = logging_redirect_tqdm(loggers=[logging.getLogger()])
        self._redirect.__enter__()
        self._tqdm = tqdm
        # leave=None keeps the outermost bar on screen and clears nested ones (evaluation inside a study run)
        self.stream = stream
        self.bar = tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, leave=None)

    def set_total(self, total: int | None) -> None:
        self.bar.total = total
        self.bar.refresh()

    def update(self, n: int) -> None:
        self.bar.update(n)

    def write(self, message: str) -> None:
        self._tqdm.write(message, file=self.stream)

    def close(self, completed: bool) -> None:
        self.bar.close()
        self._redirect.__exit__(None, None, None)


class Progress(Generic[T]):
    """Counts work done: ``update(n)`` by hand, or iterate to count one per item. Close it (``with``) for the
    final report; iterating to the end closes it too."""

    def __init__(self, backend: _Backend, items: Iterable[T] | None) -> None:
        self._backend, self._items = backend, items
        self._closed = False

    def update(self, n: int = 1) -> None:
        self._backend.update(n)

    def set_total(self, total: int | None) -> None:
        """A total learned late (a video's frame count); None when unknown."""
        self._backend.set_total(total)

    def write(self, message: str) -> None:
        """One message on stderr that does not tear a bar."""
        self._backend.write(message)

    def close(self, completed: bool = True) -> None:
        if not self._closed:
            self._closed = True
            self._backend.close(completed)

    def __iter__(self) -> Iterator[T]:
        if self._items is None:
            raise TypeError("this progress counts a total, not items; call update() instead")
        completed = False
        try:
            for item in self._items:
                yield item
                self._backend.update(1)
            completed = True
        finally:
            self.close(completed)

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(completed=exc_type is None)


def progress(items: Iterable[T] | int | None, desc: str, unit: str = "item", *, total: int | None = None,
             enabled: bool | None = None, interval_s: float | None = None, stream: TextIO | None = None,
             tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> Progress[T]:
    """Progress over ``items`` (an iterable, or an int total, or None for an unknown amount) on stderr.

    ``unit`` is singular ("face"); lines use its plural. ``total`` defaults to ``len(items)`` where there
    is one. ``enabled``, ``interval_s`` default to ``configure``'s settings; ``tty`` (default: whether
    the stream is a terminal) picks the bar or the plain lines; ``stream`` must not be stdout.
    """
    out = sys.stderr if stream is None else stream
    if out is sys.stdout:
        raise ValueError("progress is written to stderr: stdout carries the results")
    iterable: Iterable[T] | None = None
    if isinstance(items, int):
        total = items if total is None else total
    elif items is not None:
        iterable = items
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
    on = _settings.enabled if enabled is None else enabled
    backend: _Backend
    if not on:
        backend = _Backend()
    else:
        is_tty = tty if tty is not None else (not os.environ.get(PLAIN_ENV) and _isatty(out))
        if is_tty:
            backend = _Bar(desc, unit, total, out)
        else:
            backend = _LineWriter(desc, unit, total, _settings.interval_s if interval_s is None else interval_s,
                                  out, clock)
    return Progress(backend, iterable)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or stream-like objects
        return False
