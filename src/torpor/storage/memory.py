"""An in-process store: objects are bytes in a dict, committed by one
assignment under a lock. Useful for tests and for keeping files in memory;
its ``open_reader`` gives a seekable BytesIO of the committed bytes."""

import io
import threading
import time

from .base import StoreStat, WriterBase


class _MemoryWriter(WriterBase):
    def __init__(self, store, key):
        self._store = store
        self._key = key
        self._buf = io.BytesIO()

    def write(self, data):
        return self._buf.write(data)

    def flush(self):
        pass

    def commit(self):
        self._end("commit")
        self._store._put(self._key, self._buf.getvalue())
        self._buf = None

    def abort(self):
        self._end("abort")
        self._buf = None


class MemoryStore:
    """Objects held in memory, under string keys."""

    def __init__(self):
        self._objects = {}              # key -> (bytes, commit time)
        self._lock = threading.Lock()

    def _put(self, key, data):
        with self._lock:
            self._objects[key] = (data, time.time())

    def _get(self, key):
        with self._lock:
            try:
                return self._objects[key]
            except KeyError:
                raise FileNotFoundError(f"no object {key!r} in {self!r}") from None

    def open_writer(self, key, *, mode=None):
        if not isinstance(key, str) or not key:
            raise ValueError(f"a MemoryStore key is a non-empty string, not {key!r:.60}")
        return _MemoryWriter(self, key)

    def open_reader(self, key):
        data, _ = self._get(key)
        f = io.BytesIO(data)
        f.name = self.describe(key)
        return f

    def stat(self, key):
        data, t = self._get(key)
        return StoreStat(len(data), t)

    def delete(self, key):
        with self._lock:
            return self._objects.pop(key, None) is not None

    def keys(self):
        with self._lock:
            return sorted(self._objects)

    def describe(self, key):
        return f"memory:{key}"

    def __repr__(self):
        return f"<MemoryStore: {len(self._objects)} objects>"
