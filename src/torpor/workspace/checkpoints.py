"""``storage.checkpoints``: checkpoints of a running workspace's namespace.

A checkpoint saves the whole namespace of the module an executor runs code in
(its variables, the functions and classes defined there, by value; modules by
name) through the module-dump machinery (``torpor.interactive.modules``), as
ONE object graph, so variables that share an object still share it when they
come back. Large values (numpy arrays and bytes / bytearrays of at least
``blob_min_bytes``, 1 MiB by default) are not part of that graph: each is stored
once, as a content-addressed **blob** (an artifact ``blobs/<digest>`` of the
checkpoint area, a torpor file saved raw by default), and the graph refers to it
by digest. A blob that exists is never written again: after a first checkpoint
of 1 GiB of arrays, a second one in which a small variable changed writes the
small graph and its record only.

Layout, in the storage's checkpoint area (an ``Artifacts``: ``<root>/checkpoints/``
of a FileStorage, ``{prefix}:{workspace}:checkpoint:...`` keys of a RedisStorage):

    <name>            the checkpoint: its data is the graph (a module-dump torpor
                      file, as plain bytes), its record's metadata the manifest
                      (variables, skipped, per-variable checksums, blobs used)
    blobs/<digest>    one large value: a .torpor file of the array (raw, mappable)
                      or a plain .bin file of the bytes

The digest is xxh3_128 over the value's bytes (in 16 MiB pieces hashed on a small
thread pool, xxhash releases the GIL; the pieces' digests and the value's kind,
dtype, shape and memory order hashed again), so two values share a blob only
when they are the same bytes of the same array type.

Blobs that no checkpoint refers to are deleted after each save and delete, once
they are older than ``grace_seconds`` (an hour by default): a concurrent save of
another session that has written its blobs but not yet committed its manifest is
not robbed of them (a save that reuses an old blob checks that it still exists
after its commit, and writes it again if a collection took it meanwhile).

Trust: a checkpoint is the session's own state and restores **trusted** (the
functions and classes saved by value are code that runs): a checkpoint area must
be writable by the workspace's owner only.
"""

from __future__ import annotations

import builtins
import datetime
import fnmatch
import io
import mmap
import os
import re
import tempfile
import threading
import time
import types
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, NoReturn, Optional, cast

import numpy as np
import xxhash

from ..engine.reduce import fix_global_name
from ..errors import (ArtifactDamagedError, ArtifactNotFoundError, CheckpointNotFoundError,
                      CorruptFileError, FormatError, InvalidNameError, TorporError)
from ..interactive import modules
from .artifacts import Artifacts, ArtifactWarning
from .names import check_name

#: Checkpoint names may not start with this: the blobs live under it.
BLOB_PREFIX = "blobs/"
#: Arrays and bytes-likes of at least this many bytes are stored as blobs.
BLOB_MIN_BYTES = 1 << 20
#: Unreferenced blobs younger than this are never collected.
GRACE_SECONDS = 3600.0
#: Values are hashed in pieces of this size (in parallel when there are several).
HASH_PIECE = 16 << 20
#: The version of the manifest (the checkpoint record's metadata).
MANIFEST_VERSION = 1
#: The graph is spooled in memory up to this size, then in a temporary file.
SPOOL_BYTES = 64 << 20
_BLOB_NAME = "torpor.checkpoints.blob"
_KINDS = ("ndarray", "bytes", "bytearray")
_DIGEST = re.compile(r"[0-9a-f]{32}\Z")

_pool: Optional[ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                       thread_name_prefix="torpor-hash")
        return _pool


def blob(digest: str, kind: str, writeable: bool) -> NoReturn:
    """Stands in a checkpoint's graph for a value stored apart as a blob;
    Checkpoints.restore resolves the name to its own loader."""
    raise FormatError("a checkpoint's blobs are loaded by storage.checkpoints.restore only")


fix_global_name(blob, _BLOB_NAME)


# --- values stored apart ---------------------------------------------------------

def _bytes_view(arr: np.ndarray[Any, Any]) -> memoryview:
    """The memory of a C- or Fortran-contiguous array as bytes, no copy."""
    return arr.ravel(order="K").view(np.uint8).data


def _digest(buf: memoryview, meta: bytes) -> str:
    n = buf.nbytes
    pieces = [buf[i:i + HASH_PIECE] for i in range(0, n, HASH_PIECE)] or [buf]
    if len(pieces) > 1:
        parts = list(_hash_pool().map(xxhash.xxh3_128_digest, pieces))
    else:
        parts = [xxhash.xxh3_128_digest(pieces[0])]
    return xxhash.xxh3_128_hexdigest(meta + b"\0" + b"".join(parts))


class _Stored:
    """A value stored as a blob: its digest, kind, size and the data written
    (a contiguous copy for a non-contiguous array); ``obj`` keeps it alive, so
    its id stays its own for the whole save."""

    __slots__ = ("obj", "digest", "kind", "nbytes", "data", "writeable")

    def __init__(self, obj: Any, digest: str, kind: str, nbytes: int, data: Any,
                 writeable: bool) -> None:
        self.obj, self.digest, self.kind, self.nbytes = obj, digest, kind, nbytes
        self.data, self.writeable = data, writeable


def _stored(obj: Any, min_bytes: int) -> Optional[_Stored]:
    """The blob of ``obj`` (an array, bytes or bytearray), or None when it stays
    in the graph (small, or an array of Python objects)."""
    t = type(obj)
    if t is bytes or t is bytearray:
        if len(obj) < min_bytes:
            return None
        view = memoryview(obj)
        return _Stored(obj, _digest(view, b"bytes"), t.__name__, len(obj), obj, t is bytearray)
    arr = obj
    if arr.dtype.hasobject or arr.nbytes < min_bytes:
        return None
    if arr.flags.c_contiguous:
        order, data = "C", arr
    elif arr.flags.f_contiguous:
        order, data = "F", arr
    else:
        order, data = "C", np.ascontiguousarray(arr)      # as a torpor file keeps it
    dt = data.dtype
    meta = f"ndarray|{dt.str}|{dt.descr!r}|{dt!r}|{data.shape!r}|{order}".encode()
    return _Stored(obj, _digest(_bytes_view(data), meta), "ndarray", int(data.nbytes), data,
                   bool(arr.flags.writeable))


class _Probe:
    """What one variable's dry run writes (modules.dump_namespace's ``probe``),
    hashed: the variable's checksum. Blobs appear in it as their digests."""

    __slots__ = ("h", "n")

    def __init__(self) -> None:
        self.h = xxhash.xxh3_128()
        self.n = 0

    def stream_frame(self, data: bytes) -> None:
        self.h.update(data)

    def add_array(self, arr: np.ndarray[Any, Any], fortran: bool) -> int:
        if fortran and not arr.flags.f_contiguous:
            arr = np.asfortranarray(arr)
        elif not fortran and not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        self.h.update(_bytes_view(arr))
        self.n += 1
        return self.n - 1

    def add_bytes(self, obj: Any) -> int:
        self.h.update(obj)
        self.n += 1
        return self.n - 1

    def hexdigest(self) -> str:
        return str(self.h.hexdigest())


class _Spool:
    """Where the graph is written before it becomes the checkpoint's data:
    memory up to SPOOL_BYTES, then a temporary file (mapped at the end)."""

    def __init__(self) -> None:
        self.buf: Optional[io.BytesIO] = io.BytesIO()
        self.file: Any = None
        self.map: Optional[mmap.mmap] = None

    def write(self, b: Any) -> int:
        n = memoryview(b).nbytes
        if self.buf is not None and self.buf.tell() + n > SPOOL_BYTES:
            self.file = tempfile.TemporaryFile(prefix="torpor-checkpoint-")
            self.file.write(self.buf.getbuffer())
            self.buf = None
        out = self.buf if self.buf is not None else self.file
        out.write(b)
        return n

    def view(self) -> memoryview:
        if self.buf is not None:
            return self.buf.getbuffer()
        self.file.flush()
        self.map = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(self.map)

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:     # a writer still holds a view: unmapped when it goes
                pass
        if self.file is not None:
            self.file.close()       # (a mapping outlives its file)
        self.buf = None


def _timestamp(iso: str) -> float:
    """Seconds since the epoch of a record's ISO 8601 UTC time (Python 3.10 reads no 'Z')."""
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Checkpoints:
    """The checkpoints of one workspace storage (``storage.checkpoints``), kept
    in ``area``: the storage's checkpoint area (an Artifacts, separate from
    ``storage.artifacts``). ``grace_seconds``: how old an unreferenced blob must
    be before it is deleted; ``blob_min_bytes``: the size from which arrays and
    bytes are stored apart (bytes and bytearrays below 256 KiB never are);
    ``compress``: the blobs' compression (None: raw, memory-mapped on restore
    from a local folder; "lz4": smaller, read into memory)."""

    def __init__(self, area: Artifacts, *, grace_seconds: float = GRACE_SECONDS,
                 blob_min_bytes: int = BLOB_MIN_BYTES, compress: Optional[str] = None) -> None:
        if not isinstance(area, Artifacts):
            raise TypeError(f"Checkpoints takes the storage's checkpoint area (an Artifacts), "
                            f"not {type(area).__name__}")
        if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, (int, float)) \
                or not grace_seconds >= 0:
            raise ValueError(f"grace_seconds must be a number >= 0, not {grace_seconds!r}")
        if type(blob_min_bytes) is not int or blob_min_bytes < 1:
            raise ValueError(f"blob_min_bytes must be an int >= 1, not {blob_min_bytes!r}")
        if compress not in (None, "lz4", "gzip"):
            raise ValueError(f'compress must be None, "lz4" or "gzip", not {compress!r}')
        self.area = area
        self.grace_seconds = float(grace_seconds)
        self.blob_min_bytes = blob_min_bytes
        self.compress = compress
        self._mappable: Optional[bool] = None     # whether blobs load with mmap=True
        # {"name", "digests"} of the checkpoint this object saved or restored last:
        # what a save reports its ``changed`` variables against
        self._last: Optional[dict[str, Any]] = None

    def __repr__(self) -> str:
        return f"<checkpoints in {self._where()}>"

    def _where(self) -> str:
        return repr(self.area)[len("<artifacts of "):-1]

    def _check(self, name: Any) -> str:
        check_name(name, "checkpoint name")
        if name == BLOB_PREFIX[:-1] or name.startswith(BLOB_PREFIX):
            raise InvalidNameError(f"the checkpoint name {name!r} is reserved: names under "
                                   f"{BLOB_PREFIX!r} hold the checkpoints' large values")
        return str(name)

    # --- saving ---------------------------------------------------------------------

    def save(self, name: str, module: types.ModuleType, *,
             exclude: Iterable[str] = ()) -> dict[str, Any]:
        """Save the namespace of ``module`` as checkpoint ``name`` (replacing a
        checkpoint of that name). ``exclude``: names or glob patterns left out
        (the executor's injected objects); interpreter names (``__builtins__``,
        ``__name__``, ...) never go in. A variable that cannot be saved (a
        generator, a socket) is skipped and listed, never a failed checkpoint.
        Returns ``{"name", "variables", "skipped", "changed", "previous",
        "bytes_written", "bytes_reused", "blobs_written", "blobs_reused",
        "seconds"}``; on any error nothing of the checkpoint is committed (a
        checkpoint of that name stays as it was)."""
        self._check(name)
        if not isinstance(module, types.ModuleType):
            raise TypeError(f"module must be a module, not {type(module).__name__}")
        exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        t0 = time.perf_counter()
        found: dict[int, _Stored] = {}       # id(value) -> its blob, for the whole save
        uses: dict[str, set[str]] = {}       # variable -> digests its dry run met
        current = [""]
        ready: dict[str, _Stored] = {}       # digests present in the area
        counts = {"bytes_written": 0, "bytes_reused": 0, "blobs_written": 0, "blobs_reused": 0}
        reused: list[str] = []

        def external(obj: Any) -> Optional[tuple[Any, tuple[Any, ...]]]:
            st = found.get(id(obj))
            if st is None:
                st = _stored(obj, self.blob_min_bytes)
                if st is None:
                    return None
                found[id(obj)] = st
            if current[0]:
                uses.setdefault(current[0], set()).add(st.digest)
            elif st.digest not in ready:             # met only now: store it now
                self._provide([st], ready, counts, reused)
            return blob, (st.digest, st.kind, st.writeable)

        probes: dict[str, _Probe] = {}
        digests: dict[str, str] = {}        # variable -> checksum of its encoding

        def probe(var: str) -> _Probe:
            current[0] = var
            p = probes[var] = _Probe()
            return p

        def before_write(names: list[str]) -> dict[str, Any]:
            current[0] = ""
            needed = {d for n in names for d in uses.get(n, ())}
            self._provide(list({s.digest: s for s in found.values()
                                if s.digest in needed}.values()), ready, counts, reused)
            digests.update((n, probes[n].hexdigest()) for n in names)
            return {"digests": digests}         # in the graph's header: restore reads it

        before = None
        if self._last is None:              # what ``changed`` compares with: the last
            try:                            # checkpoint of that name
                before = self.area.get(name)
            except ArtifactDamagedError:
                pass
        spool = _Spool()
        try:
            done = modules.dump_namespace(cast(BinaryIO, spool), module, exclude=exclude, external=external,
                                          probe=probe, before_write=before_write)
            manifest = {
                "torpor_checkpoint": MANIFEST_VERSION, "module": module.__name__,
                "variables": done["variables"], "skipped": done["skipped"],
                "digests": digests,
                "blobs": {d: {"kind": st.kind, "bytes": st.nbytes} for d, st in ready.items()},
                "variable_blobs": {k: sorted(uses[k]) for k in done["variables"] if k in uses},
            }
            graph = spool.view()
            try:
                info = self.area.save(name, graph, format="bytes", metadata=manifest,
                                      description=f"checkpoint of {module.__name__}")
            finally:
                try:
                    graph.release()
                except BufferError:
                    pass
        finally:
            spool.close()
        counts["bytes_written"] += info["size"]
        # a collection running meanwhile may have taken an old unreferenced blob
        # this save reused before its manifest named it: write it again (``reused``
        # holds the blobs old enough for that: saved half a grace period ago)
        for d in reused:
            if not self._blob_present(d):
                st = ready[d]
                counts["bytes_written"] += self._put(st)
                counts["blobs_written"] += 1
        previous = self._last
        if previous is None and before is not None \
                and before["metadata"].get("torpor_checkpoint") == MANIFEST_VERSION:
            previous = {"name": name, "digests": before["metadata"].get("digests", {})}
        old = previous["digests"] if previous is not None else {}
        changed = [k for k in done["variables"] if digests.get(k) is None
                   or old.get(k) != digests[k]]
        self._last = {"name": name, "digests": digests}
        self._collect_quietly()
        return {"name": name, "variables": done["variables"], "skipped": done["skipped"],
                "changed": changed, "previous": previous["name"] if previous else None,
                **counts, "size": info["size"] + sum(st.nbytes for st in ready.values()),
                "seconds": time.perf_counter() - t0}

    def _provide(self, stored: builtins.list[_Stored], ready: dict[str, _Stored],
                 counts: dict[str, int], reused: builtins.list[str]) -> None:
        """Make sure the blobs ``stored`` are in the area: reuse those that are,
        write the others (two at a time: one's fsync or upload overlaps the
        other's writing)."""
        missing = []
        for st in stored:
            if st.digest in ready:
                continue
            info = self._blob_info(st.digest)
            if info is not None:
                counts["bytes_reused"] += info["size"]
                counts["blobs_reused"] += 1
                if time.time() - _timestamp(info["updated_at"]) >= self.grace_seconds / 2:
                    reused.append(st.digest)
                ready[st.digest] = st
            else:
                missing.append(st)
        if len(missing) > 1:
            with ThreadPoolExecutor(2, thread_name_prefix="torpor-blob") as pool:
                sizes = list(pool.map(self._put, missing))
        else:
            sizes = [self._put(st) for st in missing]
        for st, size in zip(missing, sizes):
            counts["bytes_written"] += size
            counts["blobs_written"] += 1
            ready[st.digest] = st

    def _blob_info(self, digest: str) -> Optional[dict[str, Any]]:
        try:
            return self.area.get(BLOB_PREFIX + digest)
        except ArtifactDamagedError:
            return None                 # a damaged record: written afresh

    def _blob_present(self, digest: str) -> bool:
        try:
            return self.area.exists(BLOB_PREFIX + digest)
        except ArtifactDamagedError:
            return False

    def _put(self, st: _Stored) -> int:
        meta = {"kind": st.kind, "bytes": st.nbytes}
        if st.kind == "ndarray":
            meta.update(dtype=str(st.data.dtype), shape=list(st.data.shape))
            info = self.area.save(BLOB_PREFIX + st.digest, st.data, metadata=meta,
                                  format="torpor", compress=self.compress)
        else:
            info = self.area.save(BLOB_PREFIX + st.digest, st.data, metadata=meta,
                                  format="bytes")
        return int(info["size"])

    # --- restoring -------------------------------------------------------------------

    def restore(self, name: str, module: types.ModuleType, *,
                keep: Iterable[str] = (), verify: bool = False) -> dict[str, Any]:
        """Replace the user variables of ``module`` with checkpoint ``name``'s.
        Names in ``keep`` (names or glob patterns: the executor's injected
        objects) and interpreter names stay as they are; every other variable
        goes. Everything is loaded first, into a dict of its own: a restore that
        fails (a missing or damaged checkpoint or blob, code that does not load
        here) leaves the namespace exactly as it was. Loads trusted: code saved
        by value runs. Blobs stored raw in a local folder are memory-mapped
        (copy-on-write: no copy is made, and their checksums are not read);
        ``verify=True`` reads them instead, checking every checksum. Returns
        ``{"name", "variables", "skipped", "seconds"}`` (``skipped``: what the
        save left out)."""
        self._check(name)
        if not isinstance(module, types.ModuleType):
            raise TypeError(f"module must be a module, not {type(module).__name__}")
        pats = [keep] if isinstance(keep, str) else list(keep)
        t0 = time.perf_counter()
        where = self._where()
        try:
            raw = self.area.load(name)
        except ArtifactNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint named {name!r} in {where}", name, None,
                                          where) from None
        except ArtifactDamagedError as e:
            raise ArtifactDamagedError(f"checkpoint {name!r} in {where} is damaged: {e}",
                                       name, where) from e
        if not isinstance(raw, bytes):
            raise ArtifactDamagedError(f"checkpoint {name!r} in {where} is damaged: its data is "
                                       f"not a checkpoint's graph", name, where)
        loaded: dict[str, Any] = {}

        def load_blob(digest: Any, kind: Any, writeable: Any) -> Any:
            if type(digest) is not str or not _DIGEST.match(digest) or kind not in _KINDS:
                raise FormatError(f"a blob reference is malformed: {digest!r:.40} {kind!r:.20}")
            first = loaded.get(digest)
            if first is None:
                value = loaded[digest] = self._fetch(name, digest, not verify)
            elif isinstance(first, np.ndarray):
                value = np.array(first, order="K", copy=True)   # another object: its own copy
            else:
                value = first
            if kind == "ndarray":
                if not isinstance(value, np.ndarray):
                    raise self._damaged(name, digest, "it is not an array")
                if bool(writeable) and not value.flags.writeable:
                    try:
                        value.flags.writeable = True
                    except ValueError:
                        value = np.array(value, order="K", copy=True)
                elif not writeable:
                    value.flags.writeable = False
                return value
            if not isinstance(value, (bytes, bytearray)):
                raise self._damaged(name, digest, "it is not bytes")
            return bytearray(value) if kind == "bytearray" else bytes(value)

        target = vars(module)
        try:
            header, variables = modules.load_namespace(io.BytesIO(raw), target,
                                                       extra={_BLOB_NAME: load_blob})
        except ArtifactDamagedError:
            raise
        except CorruptFileError as e:
            raise ArtifactDamagedError(f"checkpoint {name!r} in {where} is damaged: {e}",
                                       name, where) from e
        except FormatError as e:            # not damage: code from another Python, ...
            raise FormatError(f"checkpoint {name!r} in {where} cannot be restored: {e}") from e
        # everything loaded: now the namespace changes, and nothing below can fail
        def kept(k: str) -> bool:
            return any(fnmatch.fnmatchcase(k, p) for p in pats)
        for k in [k for k in target if isinstance(k, str) and not modules.interpreter_name(k)
                  and not kept(k)]:
            del target[k]
        restored = [k for k in variables if not kept(k)]
        for k in restored:
            target[k] = variables[k]
        target.setdefault("__builtins__", builtins)
        user = header.get("user")
        digests = user.get("digests", {}) if isinstance(user, dict) else {}
        self._last = {"name": name, "digests": digests if isinstance(digests, dict) else {}}
        skipped = header.get("skipped")
        return {"name": name, "variables": restored,
                "skipped": skipped if isinstance(skipped, dict) else {},
                "seconds": time.perf_counter() - t0}

    def _damaged(self, name: str, digest: str, why: str) -> ArtifactDamagedError:
        return ArtifactDamagedError(f"checkpoint {name!r} in {self._where()} is damaged: its "
                                    f"blob {digest} ({BLOB_PREFIX}{digest}) {why}",
                                    name, self._where())

    def _fetch(self, name: str, digest: str, map_it: bool) -> Any:
        key = BLOB_PREFIX + digest
        try:
            if map_it and self._mappable is not False:
                try:
                    return self.area.load(key, mmap=True)
                except ValueError as e:
                    if "mmap" not in str(e):
                        raise
                    self._mappable = False      # not a local folder: read into memory
            return self.area.load(key)
        except ArtifactNotFoundError:
            raise self._damaged(name, digest, "is missing") from None
        except ArtifactDamagedError as e:
            raise self._damaged(name, digest, f"is damaged: {e}") from e

    # --- listing, deleting, collecting --------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        """Every checkpoint, sorted by name: ``{"name", "created_at", "saved_at",
        "variables", "skipped", "size" (the graph and every blob it uses),
        "graph_bytes", "blobs", "module"}``. Reads records only."""
        out = []
        for info in self.area.list():
            entry = self._entry(info)
            if entry is not None:
                out.append(entry)
        return out

    def _entry(self, info: dict[str, Any]) -> Optional[dict[str, Any]]:
        m = info["metadata"]
        if info["name"].startswith(BLOB_PREFIX) or not isinstance(m, dict) \
                or m.get("torpor_checkpoint") != MANIFEST_VERSION:
            return None
        blobs = m.get("blobs") or {}
        return {"name": info["name"], "created_at": info["created_at"],
                "saved_at": info["updated_at"], "module": m.get("module"),
                "variables": list(m.get("variables") or []), "skipped": m.get("skipped") or {},
                "size": info["size"] + sum(int(b.get("bytes", 0)) for b in blobs.values()),
                "graph_bytes": info["size"], "blobs": len(blobs)}

    def exists(self, name: str) -> bool:
        self._check(name)
        return self.area.exists(name)

    def delete(self, name: str) -> bool:
        """Delete checkpoint ``name``; False if there was none. Its blobs go with
        it once no other checkpoint uses them and the grace period has passed."""
        self._check(name)
        gone = self.area.delete(name)
        if gone:
            if self._last is not None and self._last["name"] == name:
                self._last = None
            self._collect_quietly()
        return gone

    def _listing(self) -> Optional[tuple[set[str], dict[str, float]]]:
        """(digests the checkpoints use, {digest: save time} of the blobs), or
        None when a record could not be read (then nothing may be collected:
        an unreadable manifest may refer to any blob)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            infos = self.area.list()
        damaged = False
        for w in caught:
            damaged = damaged or issubclass(w.category, ArtifactWarning)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if damaged:
            return None
        used: set[str] = set()
        blobs: dict[str, float] = {}
        for info in infos:
            if info["name"].startswith(BLOB_PREFIX):
                d = info["name"][len(BLOB_PREFIX):]
                if _DIGEST.match(d):
                    blobs[d] = _timestamp(info["updated_at"])
                continue
            m = info["metadata"]
            if isinstance(m, dict) and isinstance(m.get("blobs"), dict):
                used.update(m["blobs"])
        return used, blobs

    def collect_garbage(self) -> builtins.list[str]:
        """Delete the blobs no checkpoint refers to that were saved more than
        ``grace_seconds`` ago; the digests deleted. Runs after every save and
        delete; nothing is collected while a record of the area is unreadable."""
        listing = self._listing()
        if listing is None:
            return []
        used, blobs = listing
        cutoff = time.time() - self.grace_seconds
        doomed = [d for d, t in blobs.items() if d not in used and t <= cutoff]
        if doomed:
            listing = self._listing()        # a checkpoint committed since may use one
            if listing is None:
                return []
            doomed = [d for d in doomed if d not in listing[0]]
        gone = []
        for d in doomed:
            if self.area.delete(BLOB_PREFIX + d):
                gone.append(d)
        return gone

    def _collect_quietly(self) -> None:
        try:
            self.collect_garbage()
        except (OSError, TorporError) as e:
            warnings.warn(f"{self._where()}: collecting unused checkpoint blobs failed "
                          f"({type(e).__name__}: {e}); they are collected after a later "
                          f"save or delete", ArtifactWarning, stacklevel=3)
