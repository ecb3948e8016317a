"""Per-run capture of ``sys.stdout`` / ``sys.stderr``, by thread.

Two sessions in one process run their code at the same time in two threads, so
swapping ``sys.stdout`` for a buffer (``contextlib.redirect_stdout``) would mix
their output and steal the host's. Instead ``sys.stdout`` and ``sys.stderr``
become routers (once, the first time a run captures): a write from a thread
that is capturing goes to that run's buffer, any other write to the stream the
router replaced. Output written below Python (C ``printf`` to file descriptor 1)
is not captured in process; the subprocess executor's worker can."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_local = threading.local()
_install_lock = threading.Lock()


class _Router(io.TextIOBase):
    """Stands in ``sys.stdout`` (or ``sys.stderr``): writes of capturing threads go
    to their buffer, everything else to ``target``."""

    def __init__(self, which: str, target: TextIO) -> None:
        self._which = which
        self.target = target

    def _sink(self) -> Any:
        bufs = getattr(_local, "buffers", None)
        return bufs[self._which] if bufs is not None else self.target

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self._sink().write(s)
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        sink = self._sink()
        if sink is self.target:
            self.target.flush()

    def isatty(self) -> bool:
        return False if getattr(_local, "buffers", None) is not None else self.target.isatty()

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return getattr(self.target, "errors", None) or "strict"

    def __getattr__(self, name: str) -> Any:      # buffer, mode, name, ...: the real stream's
        return getattr(self.target, name)


def _install() -> None:
    """Put routers in ``sys.stdout`` / ``sys.stderr`` unless they are there (a test
    harness or IPython may have replaced them since: then the router wraps the
    new stream)."""
    with _install_lock:
        for which in ("stdout", "stderr"):
            cur = getattr(sys, which)
            if not isinstance(cur, _Router):
                setattr(sys, which, _Router(which, cur))


@contextmanager
def capturing() -> Iterator[dict[str, io.StringIO]]:
    """Capture this thread's ``print`` output for the block: yields
    ``{"stdout": StringIO, "stderr": StringIO}``."""
    _install()
    bufs = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    prev = getattr(_local, "buffers", None)
    _local.buffers = bufs
    try:
        yield bufs
    finally:
        _local.buffers = prev
