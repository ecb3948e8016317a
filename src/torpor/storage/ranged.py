"""Reading a remote object in byte ranges: a seekable, read-only file whose every
miss is one ranged request (``fetch(start, end)``), for torpor files on object
stores.

What a torpor read looks like, and why the windows are shaped as they are:

- ``info`` reads the preamble and header at the start, then the footer at the
  end and the table of contents just before it. The first read anywhere fetches
  a window of ``FIRST`` bytes (64 KiB): at the start it holds the header; near
  the end it is laid to *end* at the end of the object, so it holds the footer
  and, below it, the table of contents. ``info`` is then two requests however
  large the file (three when the table of contents is larger than the window).
- ``load`` and ``verify`` also go back from the table of contents to the first
  section, then read forwards to the end: the two windows kept (the most recently
  used) still hold the start, and each read that continues where a window ends
  fetches twice as much as the one before, up to ``MOST`` (16 MiB), so a large
  file streams in large requests and a small one in few.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Callable, Optional

from .positioned import PositionedReader

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: What a read that does not continue an earlier window fetches.
FIRST = 64 << 10
#: The most a sequential read fetches ahead in one request.
MOST = 16 << 20
#: Windows kept: the start of the file and where reading is now.
KEEP = 2


class RangedReader(PositionedReader):
    """A seekable binary reader of ``size`` bytes fetched by ``fetch(start, end)``
    (``end`` exclusive) on demand; see the module's docstring. ``requests`` and
    ``fetched`` count the requests made and the bytes they returned.
    ``on_close`` runs at ``close`` (closing the file the ranges come from)."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int, name: str,
                 on_close: Optional[Callable[[], Any]] = None) -> None:
        super().__init__()
        self._fetch = fetch
        self.size = self._size = int(size)
        self.name = name
        self._on_close = on_close
        self._pos = 0
        self._windows: list[tuple[int, bytes]] = []     # (start, data), most recently used last
        self._ahead = FIRST
        self.requests = 0
        self.fetched = 0

    @classmethod
    def over_file(cls, f: Any, name: str) -> RangedReader:
        """Ranges of the seekable binary file ``f`` (an fsspec file opened without
        a cache of its own: each ``read`` one request), closed with the reader."""
        size = f.seek(0, io.SEEK_END)

        def fetch(start: int, end: int) -> bytes:
            f.seek(start)
            data: bytes = f.read(end - start)
            return data
        return cls(fetch, size, name, on_close=f.close)

    # --- io.RawIOBase --------------------------------------------------------------

    def read(self, size: Optional[int] = -1) -> bytes:
        self._check_open()
        n = self._clamp(size)
        hit = self._window_at(self._pos)
        if hit is not None and self._pos + n <= hit[0] + len(hit[1]):
            at = self._pos - hit[0]         # the usual case: inside one window, one copy
            self._pos += n
            return hit[1][at:at + n]
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        n = self._clamp(len(view))
        done = 0
        while done < n:
            hit = self._window_at(self._pos)
            if hit is None:
                hit = self._fill(self._pos, n - done)
            start, data = hit
            at = self._pos - start
            take = min(n - done, len(data) - at)
            view[done:done + take] = memoryview(data)[at:at + take]
            done += take
            self._pos += take
        return n

    def close(self) -> None:
        if not self.closed:
            self._windows = []
            try:
                if self._on_close is not None:
                    self._on_close()
            finally:
                super().close()

    # --- windows -------------------------------------------------------------------

    def _clamp(self, size: Optional[int]) -> int:
        left = max(0, self.size - self._pos)
        return left if size is None or size < 0 else min(size, left)

    def _window_at(self, pos: int) -> Optional[tuple[int, bytes]]:
        for i, (start, data) in enumerate(self._windows):
            if start <= pos < start + len(data):
                if i != len(self._windows) - 1:     # most recently used last
                    self._windows.append(self._windows.pop(i))
                return start, data
        return None

    def _fill(self, pos: int, need: int) -> tuple[int, bytes]:
        """Fetch a window holding ``pos`` and at least ``need`` bytes after it."""
        sequential = any(start + len(data) == pos for start, data in self._windows)
        self._ahead = min(MOST, self._ahead * 2) if sequential else FIRST
        length = max(need, self._ahead)
        start, end = pos, min(self.size, pos + length)
        if not sequential and end - start < length:
            # a jump near the end (to the footer): the table of contents is just
            # below it, so the window ends at the end of the object instead
            start = max(0, end - length)
        data = self._fetch(start, end)
        self.requests += 1
        self.fetched += len(data)
        if len(data) != end - start:
            raise OSError(f"{self.name}: asked for bytes {start} to {end} of {self.size}, got "
                          f"{len(data)}; the object changed or was cut short while being read")
        self._windows.append((start, data))
        del self._windows[:-KEEP]
        return start, data
