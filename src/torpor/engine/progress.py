"""Progress of long saves and loads: the ``progress=`` argument of ``dump``,
``load``, ``Session.save/restore`` and ``dump_module/load_module``.

``progress=True`` shows a tqdm bar in bytes (``tqdm.auto``: a widget in Jupyter,
text on a terminal) that appears only once the work has taken about a second, so
quick saves print nothing; a callable is called as ``progress(done, total)`` after
every write or read (bytes of the file so far; ``total`` is the file's size for a
load, None for a save, whose size is known only at its end). ``None``/``False``
(the default) adds nothing at all: the file object is used as it is.

The count is taken at the file object: what a save has written, what a load has
read. Saves write and loads read a file in order, chunk by chunk (2 MiB), so the
bar moves evenly, and the walkers and codecs know nothing of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Callable, Optional

#: Seconds of work before the bar appears (tqdm's ``delay``).
BAR_DELAY = 1.0
#: Bytes between two updates of a bar.
BAR_STEP = 1 << 20

Callback = Callable[[int, Optional[int]], Any]


def check(progress: Any) -> Any:
    """``progress`` as given if it is None, a bool or a callable; TypeError otherwise."""
    if progress is None or isinstance(progress, bool) or callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable progress(done, total), "
                    f"not {type(progress).__name__} {progress!r:.40}")


class _Tracker:
    """Counts bytes and reports them to a callable or a tqdm bar."""

    __slots__ = ("done", "total", "shown", "_call", "_bar")

    def __init__(self, progress: Any, what: str, total: Optional[int]) -> None:
        self.done = 0
        self.shown = 0
        self.total = total
        self._call: Optional[Callback] = None
        self._bar: Any = None
        if progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                raise ImportError("progress=True shows a tqdm progress bar, and tqdm is not "
                                  "installed: pip install tqdm (or pass a callable "
                                  "progress(done, total))") from None
            self._bar = tqdm(total=total, desc=what, unit="B", unit_scale=True,
                             unit_divisor=1024, delay=BAR_DELAY, leave=False,
                             dynamic_ncols=True)
        else:
            self._call = progress

    def add(self, n: int) -> None:
        self.done += n
        # a load reads the table of contents at the end of the file twice (first,
        # to check the file, and again in turn): the count stops at the file's size
        shown = self.done if self.total is None else min(self.done, self.total)
        if shown > self.shown:
            if self._bar is not None:
                # a bar redraws at most 10 times a second anyway; its update costs
                # microseconds, and a load makes thousands of small reads
                if shown - self.shown >= BAR_STEP or shown == self.total:
                    self._bar.update(shown - self.shown)
                    self.shown = shown
            else:
                assert self._call is not None
                self._call(shown, self.total)
                self.shown = shown

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _CountingWriter:
    """A write-only file object that counts what passes through it."""

    def __init__(self, f: Any, tracker: _Tracker) -> None:
        self._f = f
        self._t = tracker

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        if not isinstance(n, int):      # a writer that returns None wrote all of it
            n = memoryview(data).nbytes
        self._t.add(n)
        return n

    def __getattr__(self, name: str) -> Any:      # flush, fileno, ... of the real file
        return getattr(self._f, name)


class _CountingReader:
    """A read-side file object that counts what is read through it (seeks,
    ``fileno`` for mmap and the rest go to the real file)."""

    def __init__(self, f: Any, tracker: _Tracker) -> None:
        self._f = f
        self._t = tracker

    def read(self, n: int = -1) -> Any:
        data = self._f.read(n)
        if data:
            self._t.add(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


class _CountingReaderInto(_CountingReader):
    """The same for a file with ``readinto`` (the reader fills arrays with it)."""

    def readinto(self, view: Any) -> Any:
        got = self._f.readinto(view)
        if got:
            self._t.add(got)
        return got


def _size(f: Any) -> Optional[int]:
    try:
        if not f.seekable():
            return None
        here = f.tell()
        end = f.seek(0, 2)
        f.seek(here)
        return int(end) - int(here)
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def watching_writes(out: Any, progress: Any, what: str) -> Iterator[Any]:
    """``out``, or a counting wrapper of it when ``progress`` asks for one."""
    if progress is None or progress is False:     # (a callable may be falsy)
        yield out
        return
    tracker = _Tracker(progress, what, None)
    try:
        yield _CountingWriter(out, tracker)
    finally:
        tracker.close()


@contextlib.contextmanager
def watching_reads(f: Any, progress: Any, what: str) -> Iterator[Any]:
    """``f``, or a counting wrapper of it when ``progress`` asks for one; the
    total is what is left of ``f`` when it is seekable."""
    if progress is None or progress is False:     # (a callable may be falsy)
        yield f
        return
    tracker = _Tracker(progress, what, _size(f))
    try:
        wrap = _CountingReaderInto if getattr(f, "readinto", None) is not None else _CountingReader
        yield wrap(f, tracker)
    finally:
        tracker.close()
