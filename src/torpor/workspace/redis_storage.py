"""``RedisStorage``: a workspace in a Redis database (one server, not Cluster).

Key layout (docs/WORKSPACE.md), under ``{prefix}:{workspace_id or "default"}:``:

    names                                  SET: the names of the artifacts (SADD/SREM)
    artifact:results/run-1@info            STRING: the record (records.py), the commit
    artifact:results/run-1@<token>.torpor  HASH: one version's data, a RedisStore object
                                           (its manifest; .bin .txt .json likewise)
    artifact:results/run-1@<token>.torpor#<id>:<i>
                                           STRING: that object's chunks (8 MiB each)
    checkpoint-names                       SET: the names in the checkpoint area
                                           (checkpoints and their blobs/<digest>)
    checkpoint:<name>@info, checkpoint:<name>@<token>.bin, checkpoint:blobs/<digest>@...
                                           the checkpoint area (checkpoints.py): the
                                           same layout as the artifacts', apart from them

A version's data is written (chunks in pipelines, the manifest last in one
MULTI/EXEC, storage/redis_store.py) before its record is committed: the
record and the name's SADD change in one MULTI/EXEC under WATCH of the
record, so the listing always agrees with the records, and no writer
rewrites anything shared by all artifacts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

from ..errors import ArtifactDamagedError
from ..storage import Store
from ..storage.redis_store import (DEFAULT_CHUNK_SIZE, RedisStore, check_client, connect,
                                   glob_escape, import_redis, reaching, url_of)
from .artifacts import Artifacts
from .checkpoints import Checkpoints
from .library.areas import LibraryAreas
from .names import check_workspace_id

_RECORD = "@info"
_BATCH = 1000
#: What names.check_name lets through, roughly (a quick check for the listing).
_NAME = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\Z")


class _RedisBackend:
    """``artifacts.Backend`` on one area of a workspace's keys: the artifacts
    (``artifact:`` keys and the ``names`` set), or the checkpoint area
    (``area="checkpoint:"``, ``names="checkpoint-names"``)."""

    def __init__(self, client: Any, namespace: str, label: str, chunk_size: int,
                 area: str = "artifact:", names: str = "names") -> None:
        self.client = client
        self.objects = RedisStore(client, chunk_size=chunk_size)
        self.store: Optional[Store] = self.objects          # what Artifacts writes data through
        self.url = self.objects.url
        self.label = label
        self.names_key = namespace + names
        self.base = namespace + area

    def describe(self) -> str:
        return self.label

    def record_key(self, name: str) -> str:
        return self.base + name + _RECORD

    def data_key(self, name: str, token: str, ext: str) -> str:
        return f"{self.base}{name}@{token}{ext}"

    def where(self, key: str) -> str:
        return key

    def local_path(self, key: str) -> Optional[str]:
        return None

    def _damaged(self, name: str, why: str) -> ArtifactDamagedError:
        return ArtifactDamagedError(
            f"the record of artifact {name!r} in {self.label} is damaged ({why}); its data "
            f"cannot be found. Delete the artifact (storage.artifacts.delete({name!r})) or "
            f"restore the record from a backup", name, self.label)

    def read_record(self, name: str) -> Optional[bytes]:
        redis = import_redis()
        with reaching(self.url):
            try:
                raw: Optional[bytes] = self.client.get(self.record_key(name))
            except redis.exceptions.ResponseError:
                kind = self.client.type(self.record_key(name)).decode()
                raise self._damaged(name, f"a Redis {kind}, not a string") from None
        return raw

    def update_record(self, name: str,
                      update: Callable[[Optional[bytes]], Optional[bytes]]) -> None:
        redis = import_redis()
        key = self.record_key(name)
        with reaching(self.url), self.client.pipeline(transaction=True) as p:
            while True:
                try:
                    p.watch(key)
                    try:
                        current = p.get(key)
                    except redis.exceptions.ResponseError:
                        current = b""           # not a string: a damaged record
                    new = update(current)
                    p.multi()
                    if new is None:
                        p.delete(key)
                        p.srem(self.names_key, name)
                    else:
                        p.set(key, new)
                        p.sadd(self.names_key, name)
                    p.execute()
                    return
                except redis.WatchError:
                    continue

    def records(self, prefix: str) -> Iterator[tuple[str, Any]]:
        with reaching(self.url):
            match = glob_escape(prefix) + "*" if prefix else None
            names = sorted({n.decode("utf-8", "surrogateescape") for n in
                            self.client.sscan_iter(self.names_key, match=match, count=5000)})
        for i in range(0, len(names), _BATCH):
            batch = names[i:i + _BATCH]
            with reaching(self.url):
                raws = self.client.mget([self.record_key(n) for n in batch])
                gaps = [n for n, r in zip(batch, raws) if r is None]
                kinds = dict(zip(gaps, self._types(gaps)))
            for name, raw in zip(batch, raws):
                if not _NAME.match(name):           # the set may have been edited by hand
                    yield name, self._damaged(name, "an invalid name in the names set")
                elif raw is not None:
                    yield name, raw
                elif kinds[name] != "none":         # a record that is not a string
                    yield name, self._damaged(name, f"a Redis {kinds[name]}, not a string")

    def _types(self, names: list[str]) -> list[str]:
        if not names:
            return []
        with self.client.pipeline(transaction=False) as p:
            for n in names:
                p.type(self.record_key(n))
            return [t.decode() for t in p.execute()]

    def data_keys(self, name: str) -> list[str]:
        record = self.record_key(name)
        return [k for k in self.objects.object_keys(f"{self.base}{name}@") if k != record]

    def delete_data(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.objects.delete(k)


def _check_prefix(prefix: Any) -> str:
    ok = isinstance(prefix, str) and prefix and all(
        c.isascii() and (c.isalnum() or c in "_.-:") for c in prefix)
    if not ok:
        raise ValueError(f"prefix must be a non-empty str of letters, digits, '_', '.', '-' "
                         f"and ':', not {prefix!r:.80}")
    return str(prefix)


class RedisStorage(LibraryAreas):
    """A workspace's storage in a Redis database: ``url`` (default
    redis://127.0.0.1:6379/0) or ``redis=`` a redis-py client. Every key is under
    ``{prefix}:{workspace_id or "default"}:``, so applications (``prefix``) and
    workspaces (``workspace_id``) share one database without meeting.
    ``keep_versions``, ``allow``, ``trusted``, ``compress``: as FileStorage's.
    ``chunk_size``: the bytes of each chunk of an artifact's data.
    ``checkpoints`` (checkpoints.py) keeps its checkpoints in
    ``checkpoints_area``, under ``checkpoint:`` keys and the
    ``checkpoint-names`` set, apart from the artifacts."""

    def __init__(self, url: Optional[str] = None, *, redis: Any = None, prefix: str = "torpor",
                 workspace_id: Optional[str] = None, keep_versions: int = 5,
                 allow: Iterable[Any] = (), trusted: bool = False,
                 compress: Optional[str] = "lz4", chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if redis is not None and url is not None:
            raise ValueError("RedisStorage takes a URL or a redis= client, not both")
        self.workspace_id = check_workspace_id(workspace_id)
        self.prefix = _check_prefix(prefix)
        self.redis = check_client(redis) if redis is not None else connect(url)
        self.url = url_of(self.redis)
        self.namespace = f"{self.prefix}:{self.workspace_id or 'default'}:"
        backend = _RedisBackend(self.redis, self.namespace, repr(self), chunk_size)
        with reaching(self.url):
            self.redis.ping()
        self.artifacts = Artifacts(backend, keep_versions=keep_versions, allow=allow,
                                   trusted=trusted, compress=compress)
        self.chunk_size = chunk_size
        self.checkpoints_area = self.area("checkpoint", keep_versions=0, compress=None)
        self.checkpoints = Checkpoints(self.checkpoints_area)

    def area(self, kind: str, *, keep_versions: int = 5,
             compress: Optional[str] = None) -> Artifacts:
        """An Artifacts of its own beside ``artifacts``, under ``<kind>:`` keys
        and the ``<kind>-names`` set (``checkpoint``, ``workflows``)."""
        return Artifacts(_RedisBackend(self.redis, self.namespace, f"{self!r} {kind}",
                                       self.chunk_size, area=f"{kind}:", names=f"{kind}-names"),
                         keep_versions=keep_versions, compress=compress)

    def __repr__(self) -> str:
        ws = f", workspace_id={self.workspace_id!r}" if self.workspace_id else ""
        return f"RedisStorage({self.url!r}, prefix={self.prefix!r}{ws})"
