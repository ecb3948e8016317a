"""An in-process store: objects are bytes in a dict, committed by one
assignment under a lock. Useful for tests and for keeping files in memory;
its ``open_reader`` gives a seekable BytesIO of the committed bytes."""

from __future__ import annotations

import io
import threading
import time
from typing import TYPE_CHECKING, BinaryIO, Optional

from .base import StoreStat, WriterBase

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class _MemoryWriter(WriterBase):
    def __init__(self, store: MemoryStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buf: Optional[io.BytesIO] = io.BytesIO()      # None once ended

    def write(self, data: ReadableBuffer) -> int:
        if self._buf is None:
            raise ValueError("cannot write: this writer was already committed or aborted")
        return self._buf.write(data)

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        self._end("commit")
        assert self._buf is not None        # _end: not ended before
        self._store._put(self._key, self._buf.getvalue())
        self._buf = None

    def abort(self) -> None:
        self._end("abort")
        self._buf = None


class MemoryStore:
    """Objects held in memory, under string keys."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}      # key -> (bytes, commit time)
        self._lock = threading.Lock()

    def _put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[key] = (data, time.time())

    def _get(self, key: str) -> tuple[bytes, float]:
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise FileNotFoundError(f"no object {key!r} in {self!r}") from None

    def open_writer(self, key: str, *, mode: Optional[int] = None) -> _MemoryWriter:
        if not isinstance(key, str) or not key:
            raise ValueError(f"a MemoryStore key is a non-empty string, not {key!r:.60}")
        return _MemoryWriter(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        data, _ = self._get(key)
        f = io.BytesIO(data)
        f.name = self.describe(key)
        return f

    def stat(self, key: str) -> StoreStat:
        data, t = self._get(key)
        return StoreStat(len(data), t)

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._objects.pop(key, None) is not None

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)

    def describe(self, key: str) -> str:
        return f"memory:{key}"

    def __repr__(self) -> str:
        return f"<MemoryStore: {len(self._objects)} objects>"
