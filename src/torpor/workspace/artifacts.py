"""``storage.artifacts``: named, versioned values of any kind, on any backend.

A save writes the value's data under a key no other save uses (the artifact's
name, ``@``, a token of this host, process and time) and only then commits the
artifact's record (records.py) through the backend's atomic read-modify-write:
until that commit readers see the previous version, and a crash at any moment
leaves either the old or the new artifact, never a mix. Versions beyond the
storage's ``keep_versions`` are deleted after the commit; data a dead writer
left uncommitted is cleaned up by the next save of that name.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import socket
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, Protocol

import xxhash

from .. import storage as _storage
from ..engine import pipeline
from ..engine.safety import Policy
from ..errors import ArtifactDamagedError, ArtifactNotFoundError, CorruptFileError
from . import payload, records
from .names import check_name, check_prefix

#: This machine in data tokens: a short hash, so long names still fit a file name.
_HOST = f"{xxhash.xxh32_intdigest(socket.gethostname().encode()):08x}"


class ArtifactWarning(UserWarning):
    """An artifact was left out of a listing because its record is damaged."""


class Backend(Protocol):
    """What a storage gives ``Artifacts``: keys for data, and one atomic record
    per artifact. Data keys go through ``store`` (a torpor.storage.Store; None
    means local paths, written by torpor's atomic local writer)."""

    store: Optional[_storage.Store]

    def describe(self) -> str:
        """How messages name the storage."""
        ...

    def data_key(self, name: str, token: str, ext: str) -> str:
        """The key (or local path) of one version's data."""
        ...

    def where(self, key: str) -> str:
        """A data key as the info's ``path`` shows it (a path, a URL, a Redis key)."""
        ...

    def local_path(self, key: str) -> Optional[str]:
        """The local file of a data key (for mmap), or None."""
        ...

    def read_record(self, name: str) -> Optional[bytes]:
        ...

    def update_record(self, name: str,
                      update: Callable[[Optional[bytes]], Optional[bytes]]) -> None:
        """Atomically replace the record of ``name`` with ``update(current)``
        (None: remove it); no other update of that name runs in between."""
        ...

    def records(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """(name, record bytes or the exception reading it raised) of every
        artifact whose name starts with ``prefix``."""
        ...

    def data_keys(self, name: str) -> list[str]:
        """Every data key of ``name`` that exists (committed or not)."""
        ...

    def delete_data(self, keys: Iterable[str]) -> None:
        ...


def _token() -> str:
    return f"{_HOST}.{os.getpid()}.{time.time_ns():x}{secrets.token_hex(3)}"


#: The part of a data key after ``<name>@``: this module's token and a payload extension.
_TOKEN_EXT = re.compile(r"[0-9a-f]{8}\.[0-9]{1,10}\.[0-9a-f]{1,40}(\.torpor|\.bin|\.txt|\.json)")


def _own_data_key(b: Backend, name: str, key: str) -> bool:
    """Whether ``key`` is a data key this module would write for artifact ``name``:
    a record's list of keys to delete is never trusted beyond that (no other
    artifact's data, no path outside the storage)."""
    head = b.data_key(name, "", "")
    return key.startswith(head) and _TOKEN_EXT.fullmatch(key[len(head):]) is not None


def _writer_gone(key: str) -> bool:
    """Whether the save that wrote data ``key`` is over: its token names this host
    and a process that no longer runs (another host's data is never judged)."""
    parts = key.rsplit("@", 1)[-1].split(".")
    if len(parts) < 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError, OverflowError):
        return False
    return False


class Artifacts:
    """The artifacts of one workspace; ``storage.artifacts``."""

    def __init__(self, backend: Backend, *, keep_versions: int = 5, allow: Iterable[Any] = (),
                 trusted: bool = False, compress: Optional[str] = "lz4") -> None:
        if type(keep_versions) is not int or keep_versions < 0:
            raise ValueError(f"keep_versions must be an int >= 0, not {keep_versions!r}")
        pipeline.SaveOptions.of(compress)                  # checks it
        self._b = backend
        self.keep_versions = keep_versions
        self.allow = tuple(allow)
        self.trusted = bool(trusted)
        self.compress = compress

    def __repr__(self) -> str:
        return f"<artifacts of {self._b.describe()}>"

    # --- writing -----------------------------------------------------------------

    def save(self, name: str, data: Any, description: str = "",
             metadata: Optional[dict[str, Any]] = None, *, format: Optional[str] = None,
             compress: Any = "default") -> dict[str, Any]:
        """Save ``data`` as the newest version of artifact ``name`` and return its
        info. Any value torpor saves is stored as a .torpor file (arrays
        zero-copy, streamed to the storage); bytes and str as plain files;
        ``format="json"`` stores a JSON-shaped value as JSON. ``compress``: the
        torpor file's compression (default: the storage's; None lets a local
        artifact be memory-mapped). The previous version is kept (up to
        ``keep_versions``); on any error it stays the current one."""
        check_name(name)
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, not {type(description).__name__}")
        metadata = copy.deepcopy(records.check_metadata(metadata))
        fmt = payload.choose_format(data, format)
        compress = self.compress if compress == "default" else compress
        options = pipeline.SaveOptions.of(compress) if fmt == "torpor" else None
        b = self._b
        key = b.data_key(name, _token(), payload.EXTENSIONS[fmt])
        saved_at = records.now()
        try:
            if options is not None:
                header_meta = {"torpor_artifact": {"name": name, "description": description,
                                                   "metadata": metadata, "saved_at": saved_at}}
                pipeline.save(data, key, options, metadata=header_meta, store=b.store)
                size, digest = pipeline.content_checksum(key, store=b.store)
            else:
                buf = payload.plain_bytes(data, fmt)
                with _storage.writing(key, store=b.store) as w:
                    w.write(buf)
                size, digest = buf.nbytes, payload.checksum(buf)
            entry = {"key": key, "format": fmt, "kind": payload.kind_of(data), "size": size,
                     "checksum": digest, "saved_at": saved_at, "description": description,
                     "metadata": metadata}
            done: dict[str, Any] = {}

            def commit(raw: Optional[bytes]) -> bytes:
                current = None
                if raw is not None:
                    try:
                        current = records.decode(raw, name, b.describe())
                    except ArtifactDamagedError:
                        current = None          # a damaged record: this save starts afresh
                rec, dropped = records.add_version(current, name, entry, self.keep_versions,
                                                   lambda k: _own_data_key(b, name, k))
                done.update(record=rec, dropped=dropped)
                return records.encode(rec)
            b.update_record(name, commit)
        except BaseException:
            if not self._committed(name, key):
                b.delete_data([key])
            raise
        rec = done["record"]
        b.delete_data(done["dropped"])
        self._clean(name, rec)
        return records.info(rec, rec["versions"][-1], b.where(key), b.describe())

    def _committed(self, name: str, key: str) -> bool:
        """After an error, whether the record refers to ``key`` after all (a
        commit whose answer was lost, a connection dropped after EXEC): then its
        data must stay. Unknown counts as committed."""
        try:
            raw = self._b.read_record(name)
        except Exception:
            return True
        return raw is not None and key.encode() in raw

    def _clean(self, name: str, rec: dict[str, Any]) -> None:
        """Delete data of ``name`` no version refers to, left by saves whose
        process is gone (killed mid-save)."""
        used = {e["key"] for e in rec["versions"]}
        try:
            stale = [k for k in self._b.data_keys(name) if k not in used and _writer_gone(k)]
        except OSError:
            return
        if stale:
            self._b.delete_data(stale)

    def delete(self, name: str) -> bool:
        """Remove artifact ``name`` with every version; False if there was none."""
        if not self.exists(name):
            return False                # no lock (no lock file, no folder) for nothing
        found: dict[str, Any] = {}

        def drop(raw: Optional[bytes]) -> None:
            found["raw"] = raw
            return None
        self._b.update_record(name, drop)
        if found.get("raw") is None:
            return False
        try:
            keys = [e["key"] for e in records.decode(found["raw"], name, self._b.describe())["versions"]]
        except ArtifactDamagedError:
            keys = []
        self._b.delete_data(set(keys) | set(self._b.data_keys(name)))
        return True

    # --- reading -------------------------------------------------------------------

    def _record(self, name: str) -> dict[str, Any]:
        check_name(name)
        raw = self._b.read_record(name)
        if raw is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r} in {self._b.describe()}",
                                        name, None, self._b.describe())
        return records.decode(raw, name, self._b.describe())

    def _entry(self, rec: dict[str, Any], version: Optional[int]) -> dict[str, Any]:
        if version is None:
            return rec["versions"][-1]
        for e in rec["versions"]:
            if e["version"] == version:
                return e
        have = [e["version"] for e in rec["versions"]]
        raise ArtifactNotFoundError(
            f"artifact {rec['name']!r} in {self._b.describe()} has no version {version!r}; it "
            f"keeps versions {have}", rec["name"], version, self._b.describe())

    def get(self, name: str) -> Optional[dict[str, Any]]:
        """The info of the current version of ``name`` (no data read), or None."""
        try:
            rec = self._record(name)
        except ArtifactNotFoundError:
            return None
        e = rec["versions"][-1]
        return records.info(rec, e, self._b.where(e["key"]), self._b.describe())

    def exists(self, name: str) -> bool:
        check_name(name)
        return self._b.read_record(name) is not None

    def versions(self, name: str) -> list[dict[str, Any]]:
        """The info of every kept version of ``name``, oldest first."""
        rec = self._record(name)
        return [records.info(rec, e, self._b.where(e["key"]), self._b.describe())
                for e in rec["versions"]]

    def list(self, prefix: str = "") -> list[dict[str, Any]]:
        """The info of every artifact (of those whose name starts with ``prefix``),
        sorted by name. An artifact whose record is damaged is left out with an
        ArtifactWarning naming it; the others are listed."""
        prefix = check_prefix(prefix)
        out, damaged = [], []
        for name, raw in self._b.records(prefix):
            try:
                if isinstance(raw, BaseException):
                    raise raw
                rec = records.decode(raw, name, self._b.describe())
            except (ArtifactDamagedError, OSError) as exc:
                damaged.append(f"{name!r} ({exc})")
                continue
            cur = rec["versions"][-1]
            out.append(records.info(rec, cur, self._b.where(cur["key"]), self._b.describe()))
        if damaged:
            warnings.warn(f"{self._b.describe()}: left out {len(damaged)} damaged artifact(s): "
                          + "; ".join(damaged), ArtifactWarning, stacklevel=2)
        out.sort(key=lambda i: i["name"])
        return out

    def load(self, name: str, *, version: Optional[int] = None, mmap: bool = False,
             allow: Iterable[Any] = (), trusted: Optional[bool] = None) -> Any:
        """The value of artifact ``name`` (its current version, or ``version``).
        A .torpor artifact loads safely, as ``torpor.load`` does: with the
        storage's ``allow=`` list plus this call's, or ``trusted=True``.
        ``mmap=True`` maps the raw arrays of a local .torpor artifact."""
        rec = self._record(name)
        entry = self._entry(rec, version)
        b, key = self._b, entry["key"]
        if entry["format"] != "torpor":
            try:
                with _storage.reading(key, store=b.store) as (f, _):
                    raw = f.read()
            except FileNotFoundError:
                raise self._missing(name, entry) from None
            except CorruptFileError as e:
                raise ArtifactDamagedError(
                    f"artifact {name!r} version {entry['version']} in {b.describe()} is "
                    f"damaged: {e}; load an earlier version (versions({name!r})) or save it "
                    f"again", name, b.describe()) from e
            return payload.from_plain(raw, entry, name, b.describe())
        if mmap and b.local_path(key) is None:
            raise ValueError(f"mmap=True maps local files; {b.describe()} keeps artifact "
                             f"{name!r} elsewhere: load it without mmap")
        trusted = self.trusted if trusted is None else bool(trusted)
        options = pipeline.LoadOptions(Policy(trusted=trusted, allow=[*self.allow, *allow]),
                                       bool(mmap))
        local = b.local_path(key) if mmap else None
        try:
            if local is not None:
                return pipeline.load(local, options)
            return pipeline.load(key, options, store=b.store)
        except FileNotFoundError:
            raise self._missing(name, entry) from None
        except ArtifactDamagedError:
            raise
        except CorruptFileError as e:
            raise ArtifactDamagedError(
                f"artifact {name!r} version {entry['version']} in {b.describe()} is damaged: "
                f"{e}; load an earlier version (versions({name!r})) or save it again",
                name, b.describe()) from e

    def _missing(self, name: str, entry: dict[str, Any]) -> ArtifactDamagedError:
        return ArtifactDamagedError(
            f"artifact {name!r} version {entry['version']} in {self._b.describe()} is damaged: "
            f"its data ({self._b.where(entry['key'])}) is missing", name, self._b.describe())
