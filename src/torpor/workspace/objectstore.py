"""Artifacts in an object store or any fsspec filesystem:
``FileStorage("s3://bucket/prefix", storage_options={...})``.

The layout is a local FileStorage's, as keys under the URL (and ``workspace_id``):

    s3://bucket/prefix/artifacts/results/run-1@info.json        the record: the commit
    s3://bucket/prefix/artifacts/results/run-1@<token>.torpor   one version's data

Data goes through ``FsspecStore`` (torpor.storage.fsspec_store): each version's
object appears whole or not at all (one PUT, or a multipart upload completed in
one step). An object store has no locks, so a record is committed by an
optimistic read-modify-write: read it (with its ETag), build the new one, PUT it.

- Each artifact's record is one PUT: never half-written, and its data is
  complete before it. A crash at any moment leaves the old or the new version.
- On S3 the PUT is conditional (``If-Match`` the ETag read, ``If-None-Match: *``
  for a new artifact): if another writer committed in between, the update is
  read and applied again, so concurrent saves of one name each add their
  version and none is lost (a PUT that landed but whose answer was lost, its
  retry refused, is recognised in the record read again: not applied twice).
- Where the store has no conditional PUT (GCS and the others, for now), the
  last writer wins: two writers of the same name end with one complete version
  of one of them, but concurrent versions of one name may drop a history entry
  (its data is then deleted by the next save of that name on its host, once
  the writer's process is gone). Threads of one process always queue.
- Deleting an artifact is not conditional: a save that commits while it is
  being deleted may be deleted with it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

from ..storage import Store
from ..storage.fsspec_store import FsspecStore
from .names import check_name

RECORD = "@info.json"
#: Records fetched per request batch (fsspec fetches a batch concurrently on S3).
BATCH = 1000
#: How often a conditional commit is tried again when other writers keep winning.
TRIES = 50
# Threads of this process that commit the same record queue here (striped locks).
_LOCKS = [threading.Lock() for _ in range(64)]


def _landed(tried: bytes, raw: Optional[bytes]) -> bool:
    """Whether the record ``raw`` already holds the update ``tried``: the same
    bytes, or a record that has ``tried``'s newest version (same data key). A
    PUT whose answer was lost is retried by the client, and then refused
    because the object changed: by that very PUT, maybe followed by others."""
    if raw is None:
        return False
    if raw == tried:
        return True
    try:
        mine, now = json.loads(tried), json.loads(raw)
        key = mine["versions"][-1]["key"]
        return any(e.get("key") == key for e in now["versions"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False


class _FsspecBackend:
    """``artifacts.Backend`` on an FsspecStore rooted at ``url`` (the
    workspace's ``artifacts`` folder)."""

    def __init__(self, url: str, label: str,
                 storage_options: Optional[dict[str, Any]] = None) -> None:
        self.objects = FsspecStore(url, storage_options=storage_options)
        self.objects.check()
        self.store: Optional[Store] = self.objects       # what Artifacts writes data through
        self.label = label

    def describe(self) -> str:
        return self.label

    def data_key(self, name: str, token: str, ext: str) -> str:
        return f"{name}@{token}{ext}"

    def where(self, key: str) -> str:
        return self.objects.describe(key)

    def local_path(self, key: str) -> Optional[str]:
        if "file" in self.objects.protocols or "local" in self.objects.protocols:
            return self.objects.path(key)
        return None

    def read_record(self, name: str) -> Optional[bytes]:
        try:
            return self.objects.read(name + RECORD)
        except FileNotFoundError:
            return None

    def update_record(self, name: str,
                      update: Callable[[Optional[bytes]], Optional[bytes]]) -> None:
        key = name + RECORD
        st = self.objects
        tried: Optional[bytes] = None
        with _LOCKS[hash(st.describe(key)) % len(_LOCKS)]:
            for attempt in range(TRIES):
                raw, tag = st.read_tagged(key)
                if tried is not None and _landed(tried, raw):
                    return          # the refused PUT was a retry of one that had landed
                new = update(raw)
                if new is None:
                    if raw is not None:
                        st.delete(key)
                    return
                if st.put(key, new, tag=tag, existed=raw is not None):
                    return
                tried = new
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** attempt)))
        raise OSError(f"{self.label}: could not commit artifact {name!r}: other writers "
                      f"changed its record {TRIES} times while this save tried; nothing "
                      f"of this save was kept, save it again")

    def records(self, prefix: str) -> Iterator[tuple[str, Any]]:
        st = self.objects
        start = prefix.rpartition("/")[0]
        folder = st.path(start) if start else st.root
        st.fs.invalidate_cache(folder)
        try:
            paths = st.fs.find(folder)
        except FileNotFoundError:
            return
        found = []
        for p in paths:
            if not p.endswith(RECORD):
                continue
            try:
                name = check_name(st.key(p)[:-len(RECORD)])
            except ValueError:      # InvalidNameError is one
                continue            # not a key this storage wrote
            if name.startswith(prefix):
                found.append((name, p))
        found.sort()
        for i in range(0, len(found), BATCH):
            batch = found[i:i + BATCH]
            got = st.fs.cat([p for _, p in batch], on_error="return")
            for name, p in batch:
                raw = got.get(p, FileNotFoundError(p))
                if isinstance(raw, FileNotFoundError):
                    continue        # deleted since the listing
                yield name, raw

    def data_keys(self, name: str) -> list[str]:
        return [k for k in self.objects.keys_starting(name + "@") if not k.endswith(RECORD)]

    def delete_data(self, keys: Iterable[str]) -> None:
        self.objects.remove(keys)
