"""A Redis server as a torpor ``Store``. redis-py is optional: it is imported
when the first client is made, never by ``import torpor``.

An object is kept as fixed-size chunks (default 8 MiB, so objects far beyond
Redis's 512 MB value limit work) and one small manifest, all under the
object's key::

    KEY                      HASH   size, chunks, chunk_size, mtime, id (the commit)
    KEY#<id>:0 .. KEY#<id>:N STRING the bytes, chunk_size each (the last one shorter)

``<id>`` is new for every writer, so a writer never touches the chunks readers
of the current object use. ``write`` sends whole chunks in pipelines as they
fill; ``commit`` sends the last one, then, in one ``MULTI``/``EXEC`` under
``WATCH`` of the manifest and of every new chunk, replaces the manifest and
unlinks the chunks of the object it replaces. Readers never see half an
object: without the manifest there is no object, and a commit whose chunks
were deleted meanwhile fails instead of publishing them. ``abort`` (or an
exception in ``with store.open_writer(key)``) unlinks the chunks written. A
process killed mid-write leaves chunks and no manifest; ``delete(key)``
removes them (and ``torpor.workspace`` does for artifacts).

``open_reader`` returns a seekable read-only file that fetches chunks lazily,
whole, keeping the last one: torpor's reader seeks to the footer first, then
reads the file in order, and each chunk crosses the network once. Keys cannot
contain ``#``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional, TypeVar, cast

from ..errors import CorruptFileError
from .base import StoreStat, WriterBase
from .positioned import PositionedReader

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CHUNK_SIZE = 8 << 20
#: Redis refuses values over 512 MB (proto-max-bulk-len); a chunk must fit.
MAX_CHUNK_SIZE = 512 << 20
_INSTALL = "pip install 'torpor[workspace]' (or pip install redis)"
_FIELDS = ("size", "chunks", "chunk_size", "mtime", "id")
_T = TypeVar("_T")


def import_redis() -> Any:
    """The redis module (redis-py); ImportError saying what to install."""
    try:
        return importlib.import_module("redis")
    except ImportError as e:
        raise ImportError(f"Redis storage needs redis-py: {_INSTALL}") from e


def connect(url: Optional[str] = None) -> Any:
    """A ``redis.Redis`` client of ``url`` (default redis://127.0.0.1:6379/0)."""
    url = DEFAULT_URL if url is None else url
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"a Redis URL looks like 'redis://host:6379/0', not {url!r:.80}")
    return import_redis().Redis.from_url(url)


def url_of(client: Any) -> str:
    """How messages name the server of ``client`` (never with its password)."""
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return repr(client)
    db = kw.get("db", 0)
    if kw.get("path"):
        return f"unix://{kw['path']}?db={db}"
    scheme = "rediss" if "ssl" in getattr(client.connection_pool.connection_class, "__name__",
                                          "").lower() else "redis"
    return f"{scheme}://{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{db}"


def check_client(client: Any) -> Any:
    """``client`` if it is a redis-py client returning bytes; TypeError/ValueError."""
    if not callable(getattr(client, "pipeline", None)) or not callable(getattr(client, "get",
                                                                                None)):
        raise TypeError(f"redis= takes a redis.Redis client (redis-py), not "
                        f"{type(client).__name__}")
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if kw.get("decode_responses"):
        raise ValueError("the redis.Redis client was made with decode_responses=True; torpor "
                         "stores bytes: give a client made without it")
    return client


@functools.lru_cache(maxsize=None)
def _errors() -> tuple[type[BaseException], ...]:
    exc = import_redis().exceptions
    return (exc.ConnectionError, exc.TimeoutError)


@contextlib.contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn redis-py's connection errors into a ConnectionError saying which
    server and how to start one."""
    try:
        yield
    except _errors() as e:
        raise ConnectionError(
            f"cannot reach the Redis server at {url} ({e}). Start one there (for example "
            f"`redis-server --port 6379`; Debian's package is redis-server), or give the "
            f"URL or a redis.Redis client of a running one") from e


def _reaching(method: Callable[..., _T]) -> Callable[..., _T]:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kw: Any) -> _T:
        with reaching(self.url):
            return method(self, *args, **kw)
    return wrapper


def glob_escape(s: str) -> str:
    """``s`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\^" else c for c in s)


class RedisWriter(WriterBase):
    """An object being written; see the module's docstring."""

    def __init__(self, store: RedisStore, key: str) -> None:
        self._store = store
        self._key = key
        self._id = secrets.token_hex(8)
        self._buf = bytearray()         # the chunk being filled
        self._fill = 0
        self._chunks = 0                # chunks sent (or being sent)
        self._size = 0

    def write(self, data: ReadableBuffer) -> int:
        if self._ended:
            raise ValueError("cannot write: this writer was already committed or aborted")
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        cs = self._store.chunk_size
        n, pos, full = mv.nbytes, 0, []
        if self._fill:
            pos = min(n, cs - self._fill)
            self._stage(mv[:pos])
            if self._fill == cs:
                full.append(memoryview(self._buf))
                self._fill = 0
        while n - pos >= cs:            # whole chunks go out without a copy
            full.append(mv[pos:pos + cs])
            pos += cs
        if full:
            self._send(full)
        if pos < n:
            self._stage(mv[pos:])
        self._size += n
        return n

    def _stage(self, piece: memoryview) -> None:
        need = self._fill + piece.nbytes
        if need > len(self._buf):
            grown = bytearray(min(self._store.chunk_size, max(need, 2 * len(self._buf))))
            grown[:self._fill] = memoryview(self._buf)[:self._fill]
            self._buf = grown
        self._buf[self._fill:need] = piece
        self._fill = need

    def _send(self, pieces: list[memoryview]) -> None:
        store = self._store
        with reaching(store.url), store.client.pipeline(transaction=False) as p:
            for piece in pieces:
                p.set(store.chunk_key(self._key, self._id, self._chunks), piece)
                self._chunks += 1
            p.execute()

    def commit(self) -> None:
        self._end("commit")
        store = self._store
        try:
            if self._fill:
                self._send([memoryview(self._buf)[:self._fill]])
            self._buf = bytearray()
            manifest = {"size": self._size, "chunks": self._chunks,
                        "chunk_size": store.chunk_size, "mtime": repr(time.time()),
                        "id": self._id}
        except BaseException:
            self._discard()
            raise
        try:
            with reaching(store.url):
                store.replace(self._key, manifest)
        except FileNotFoundError:
            self._discard()         # refused before EXEC: nothing of it was committed
            raise

    def abort(self) -> None:
        self._end("abort")
        self._discard()

    def _discard(self) -> None:
        self._buf = bytearray()
        if self._chunks:
            store = self._store
            try:
                store.unlink([store.chunk_key(self._key, self._id, i)
                              for i in range(self._chunks)])
            except _errors():
                pass                # unreachable: the chunks stay, delete(key) removes them
            self._chunks = 0

    def __del__(self) -> None:
        # a writer dropped without commit or abort leaves no chunks behind
        chunks: int = getattr(self, "_chunks", 0)
        if chunks and not self._ended:
            try:
                self.abort()
            except Exception:
                pass


class RedisReader(PositionedReader):
    """A committed object, read-only and seekable; fetches whole chunks lazily."""

    def __init__(self, store: RedisStore, key: str, manifest: dict[str, Any]) -> None:
        super().__init__()
        self.name = store.describe(key)
        self._store = store
        self._key = key
        self._m = manifest
        self._size: int = manifest["size"]
        self._pos = 0
        self._index = -1
        self._chunk = memoryview(b"")

    def _load(self, i: int) -> memoryview:
        if i != self._index:
            m, store = self._m, self._store
            with reaching(store.url):
                data = store.client.get(store.chunk_key(self._key, m["id"], i))
            if data is None:
                raise FileNotFoundError(f"{self.name}: chunk {i} is gone (the object was "
                                        f"replaced or deleted while it was read)")
            want = min(m["chunk_size"], self._size - i * m["chunk_size"])
            if len(data) != want:
                raise CorruptFileError(f"{self.name} is damaged: chunk {i} holds {len(data)} "
                                       f"bytes, not {want}")
            self._chunk, self._index = memoryview(data), i
        return self._chunk

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(view.nbytes, self._size - self._pos))
        done, cs = 0, self._m["chunk_size"]
        while done < n:
            i, off = divmod(self._pos, cs)
            chunk = self._load(i)
            take = min(n - done, len(chunk) - off)
            view[done:done + take] = chunk[off:off + take]
            done += take
            self._pos += take
        return n

    def read(self, size: Optional[int] = -1) -> bytes:
        n = self._size - self._pos if size is None or size < 0 else size
        n = max(0, min(n, self._size - self._pos))
        i, off = divmod(self._pos, self._m["chunk_size"])
        if n and off + n <= self._m["chunk_size"]:          # within one chunk: one copy
            data = bytes(self._load(i)[off:off + n])
            self._pos += n
            return data
        buf = bytearray(n)
        self.readinto(buf)
        return bytes(buf)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        self._chunk = memoryview(b"")
        super().close()


class RedisStore:
    """Objects in a Redis database under ``prefix`` + key. ``redis``: a redis-py
    client (or ``url``, default redis://127.0.0.1:6379/0). ``chunk_size``: the
    bytes of each chunk (at most 512 MiB)."""

    def __init__(self, redis: Any = None, *, url: Optional[str] = None, prefix: str = "",
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if redis is not None and url is not None:
            raise ValueError("give a Redis URL or a redis= client, not both")
        if type(chunk_size) is not int or not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be an int from 1 to {MAX_CHUNK_SIZE}, not "
                             f"{chunk_size!r}")
        if not isinstance(prefix, str) or "#" in prefix:
            raise ValueError(f"prefix must be a str without '#', not {prefix!r:.80}")
        self.client = check_client(redis) if redis is not None else connect(url)
        self.url = url_of(self.client)
        self.prefix = prefix
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"<RedisStore {self.url} prefix={self.prefix!r}>"

    # --- keys -------------------------------------------------------------------------

    def _full(self, key: str) -> str:
        if not isinstance(key, str) or not key or "#" in key:
            raise ValueError(f"a RedisStore key is a non-empty string without '#', not "
                             f"{key!r:.80}")
        return self.prefix + key

    @staticmethod
    def chunk_key(full: str, writer_id: str, i: int) -> str:
        return f"{full}#{writer_id}:{i}"

    def describe(self, key: str) -> str:
        return f"{self.url} key {self.prefix + key}"

    # --- the protocol ---------------------------------------------------------------------

    def open_writer(self, key: str, *, mode: Optional[int] = None) -> RedisWriter:
        return RedisWriter(self, self._full(key))

    @_reaching
    def open_reader(self, key: str) -> BinaryIO:
        full = self._full(key)
        m = self._manifest(self.client, full)
        if m is None:
            raise FileNotFoundError(f"no object {self.describe(key)}")
        return cast(BinaryIO, RedisReader(self, full, m))

    @_reaching
    def stat(self, key: str) -> StoreStat:
        m = self._manifest(self.client, self._full(key))
        if m is None:
            raise FileNotFoundError(f"no object {self.describe(key)}")
        return StoreStat(m["size"], m["mtime"])

    @_reaching
    def delete(self, key: str) -> bool:
        """Remove ``key``, and the chunks of unfinished writes of it (killed
        writers'); False when no object was committed under it."""
        full = self._full(key)
        existed = bool(self.client.exists(full))        # a damaged manifest is removed too
        if self.replace(full, None) is not None:
            return True
        pattern = glob_escape(full) + "#*"
        self.unlink(list(self.client.scan_iter(match=pattern, count=5000)))
        return existed

    @_reaching
    def object_keys(self, start: str) -> list[str]:
        """The keys (without the store's prefix) that start with ``start`` and
        hold an object or chunks of an unfinished write of one (SCAN)."""
        pattern = glob_escape(self.prefix + start) + "*"
        found = {k.decode("utf-8", "surrogateescape").split("#", 1)[0]
                 for k in self.client.scan_iter(match=pattern, count=5000)}
        return sorted(k[len(self.prefix):] for k in found)

    # --- helpers ------------------------------------------------------------------------

    def _manifest(self, client: Any, full: str) -> Optional[dict[str, Any]]:
        """The manifest of ``full`` checked, or None; CorruptFileError if damaged."""
        redis = import_redis()
        try:
            raw = client.hgetall(full)
        except redis.exceptions.ResponseError as e:
            raise CorruptFileError(f"{self.url} key {full} is not a torpor object ({e})") from None
        if not raw:
            return None
        try:
            m = {f: raw[f.encode()].decode() for f in _FIELDS}
            out: dict[str, Any] = {f: int(m[f]) for f in ("size", "chunks", "chunk_size")}
            out["mtime"], out["id"] = float(m["mtime"]), m["id"]
            cs = out["chunk_size"]
            if cs <= 0 or out["size"] < 0 or out["chunks"] != -(-out["size"] // cs):
                raise ValueError("its sizes disagree")
        except (KeyError, ValueError, UnicodeDecodeError) as e:
            raise CorruptFileError(f"{self.url} key {full}: the object's manifest is damaged "
                                   f"({type(e).__name__}: {e})") from None
        return out

    def unlink(self, keys: list[Any]) -> None:
        with self.client.pipeline(transaction=False) as p:
            for i in range(0, len(keys), 1000):
                p.unlink(*keys[i:i + 1000])
            p.execute()

    def replace(self, full: str, manifest: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
        """Atomically make ``manifest`` (None: nothing) the object ``full`` and
        unlink the chunks of the one it replaces; returns that one's manifest.
        A new manifest's chunks must all exist (WATCHed with it)."""
        redis = import_redis()
        new_chunks = [] if manifest is None else [
            self.chunk_key(full, manifest["id"], i) for i in range(manifest["chunks"])]
        with self.client.pipeline(transaction=True) as p:
            while True:
                try:
                    p.watch(full, *new_chunks)
                    if new_chunks and p.exists(*new_chunks) != len(new_chunks):
                        raise FileNotFoundError(
                            f"{self.url} key {full}: chunks of this write were deleted before "
                            f"its commit (a concurrent delete); nothing was committed")
                    try:
                        old = self._manifest(p, full)
                    except CorruptFileError:
                        old = None          # a damaged object is replaced, its chunks left
                    p.multi()
                    p.delete(full)
                    if manifest is not None:
                        p.hset(full, mapping=manifest)
                    if old is not None and (manifest is None or old["id"] != manifest["id"]):
                        for i in range(0, old["chunks"], 1000):
                            p.unlink(*[self.chunk_key(full, old["id"], j)
                                       for j in range(i, min(old["chunks"], i + 1000))])
                    p.execute()
                    return old
                except redis.WatchError:
                    continue
