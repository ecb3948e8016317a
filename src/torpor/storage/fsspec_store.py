"""Objects in any fsspec filesystem (``s3://bucket/prefix``, ``gs://``,
``memory://``, ...) as a torpor ``Store``. fsspec (and s3fs for ``s3://``) is
optional: it is imported when the first ``FsspecStore`` is made, never by
``import torpor``.

How a write becomes visible in one step depends on the filesystem:

- ``commit`` (S3, GCS): an object of up to ``small`` bytes (default 8 MiB) is
  held in memory and written by one PUT (``pipe_file``) at ``commit``; a larger
  one streams, from the moment it outgrows ``small``, into a file opened with
  ``autocommit=False`` (an S3 multipart upload, a GCS resumable upload), which
  holds at most about one block in memory, and ``commit`` completes it: the
  object appears at once, whole. An ``abort`` discards it (aborts the multipart
  upload) and the previous object stays as it was.
- ``move`` (every other filesystem that writes streams: local files, fsspec's
  memory filesystem, which ignores ``autocommit=False``, SFTP, ...): the object
  is written to a temporary key beside its own,
  ``.NAME.HOST.PID.RANDOM.torpor-tmp``, and moved over it by ``commit``
  (``fs.mv``: a rename where the filesystem has one). ``abort`` removes the
  temporary key. A process killed mid-write leaves its temporary key behind.
- the last resort, for filesystems that cannot open a key for writing (their
  ``open`` raises NotImplementedError): the whole object is held in memory and
  written by one ``pipe_file`` at ``commit``.
"""

from __future__ import annotations

import datetime
import importlib
import io
import os
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, cast

from .base import StoreStat, WriterBase
from .local import _HOST, TMP_SUFFIX
from .ranged import RangedReader

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

#: Filesystems whose files opened with ``autocommit=False`` appear only at ``commit``.
TRANSACTIONAL = frozenset({"s3", "s3a", "gs", "gcs"})
#: Filesystems whose PUT can be made conditional on the object's ETag (S3).
CONDITIONAL = frozenset({"s3", "s3a"})
_INSTALL = "pip install 'torpor[s3]' (fsspec and s3fs), or fsspec and the filesystem's package"


def filesystem(url: str, storage_options: Optional[dict[str, Any]] = None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it; errors that say what
    to install or what is wrong with the URL."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"{url!r} is not a URL: an object store is named like "
                         f"'s3://bucket/prefix' or 'memory://name'")
    scheme = url.split("://", 1)[0]
    try:
        fsspec = importlib.import_module("fsspec")
    except ImportError:
        raise ImportError(f"{url} needs fsspec, an optional dependency of torpor: "
                          f"{_INSTALL}") from None
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as e:
        raise ImportError(f"{url}: the filesystem for {scheme}:// is not installed ({e}); "
                          f"{_INSTALL}") from None
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise ValueError(f"{url}: fsspec knows no filesystem called {scheme!r}; use a URL "
                         f"like 's3://bucket/prefix', 'gs://bucket/prefix' or "
                         f"'memory://name'") from None
    return fs, str(path).rstrip("/")


def protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def mtime(info: dict[str, Any]) -> float:
    """Seconds since the epoch of the object's last change, from an fsspec
    ``info`` dict (each filesystem names it its own way); 0.0 if none says."""
    for k in ("mtime", "LastModified", "last_modified", "modified", "updated", "created"):
        v = info.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, str):
            try:
                v = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(v, datetime.datetime):
            if v.tzinfo is None:
                v = v.replace(tzinfo=datetime.timezone.utc)
            return v.timestamp()
    return 0.0


def error_code(e: BaseException) -> Optional[str]:
    """The S3 error code (``PreconditionFailed``, ...) behind an exception s3fs
    raised, if any."""
    seen: Optional[BaseException] = e
    for _ in range(5):
        if seen is None:
            return None
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            return str(code) if code is not None else None
        seen = seen.__cause__ or seen.__context__
    return None


class _FsspecWriter(WriterBase):
    """One object being written; see the module's docstring."""

    def __init__(self, store: FsspecStore, key: str) -> None:
        self._store = store
        self._key = key
        self._path = store.path(key)
        self._buf: Optional[bytearray] = bytearray()
        self._file: Any = None          # the fsspec file, once the object outgrows ``small``
        self._tmp: Optional[str] = None  # the temporary key's path (move)
        self._whole = False             # held whole in memory, one pipe_file at commit

    def write(self, data: ReadableBuffer) -> int:
        if self._ended:
            raise ValueError("cannot write: this writer was already committed or aborted")
        view = memoryview(data).cast("B")
        n = view.nbytes
        st = self._store
        if self._file is None:
            assert self._buf is not None
            if len(self._buf) + n <= st.small or self._whole:
                self._buf += view
                return n
            try:
                self._file = self._open()
            except NotImplementedError:     # cannot open a key for writing: the last resort
                self._whole = True
                self._buf += view
                return n
            self._file.write(self._buf)
            self._buf = None
        step = st.block_size or (16 << 20)
        for i in range(0, n, step):     # the file's buffer never holds more than a block or two
            self._file.write(view[i:i + step])
        return n

    def flush(self) -> None:
        pass

    def _open(self) -> Any:
        st = self._store
        if st.strategy == "commit":
            return st.fs.open(self._path, "wb", autocommit=False, **st.open_options)
        self._tmp = st.temporary_path(self._path)
        st.make_parent(self._tmp)
        return st.fs.open(self._tmp, "wb", **st.open_options)

    def commit(self) -> None:
        self._end("commit")
        st, fs = self._store, self._store.fs
        try:
            if self._file is None:
                assert self._buf is not None
                data, self._buf = bytes(self._buf), None
                if st.strategy == "move" and not self._whole:
                    self._tmp = st.temporary_path(self._path)
                    st.make_parent(self._tmp)
                    fs.pipe_file(self._tmp, data)
                    fs.mv(self._tmp, self._path)
                else:
                    fs.pipe_file(self._path, data)      # one PUT
            elif st.strategy == "commit":
                self._file.close()          # uploads the last part; nothing visible yet
                self._file.commit()         # the object appears whole
            else:
                self._file.close()
                fs.mv(self._tmp, self._path)
            self._tmp = None
        except BaseException:
            self._discard()
            raise
        finally:
            fs.invalidate_cache(self._path)

    def abort(self) -> None:
        self._end("abort")
        self._buf = None
        self._discard()

    def _discard(self) -> None:
        f, self._file = self._file, None
        if f is not None and self._store.strategy == "commit":
            try:
                f.discard()             # aborts the multipart upload
            finally:
                try:
                    f.closed = True     # nothing left to flush at close
                except AttributeError:
                    f.close()
        elif f is not None:
            f.close()
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            try:
                self._store.fs.rm_file(tmp)
            except FileNotFoundError:
                pass

    def __del__(self) -> None:
        # a writer dropped without commit or abort leaves nothing behind
        if not self._ended and getattr(self, "_store", None) is not None:
            try:
                self.abort()
            except Exception:
                pass


class FsspecStore:
    """Objects under ``root`` of an fsspec filesystem: ``FsspecStore(url,
    storage_options={...})`` (``s3://bucket/prefix``: keys are objects under
    that prefix) or ``FsspecStore(fs, root="bucket/prefix")``. Keys are
    ``/``-separated relative names; ``..``, empty parts and absolute keys are
    refused. ``small``: objects up to this size are written by one PUT;
    ``block_size``: the write buffer of larger ones (default: the filesystem's).
    See the module's docstring for how each filesystem commits."""

    def __init__(self, url_or_fs: Any, root: str = "", *,
                 storage_options: Optional[dict[str, Any]] = None,
                 small: int = 8 << 20, block_size: Optional[int] = None) -> None:
        if isinstance(url_or_fs, str):
            if root:
                raise TypeError("root= goes with a filesystem object; a URL names its own root")
            self.fs, self.root = filesystem(url_or_fs, storage_options)
        else:
            if storage_options:
                raise TypeError("storage_options= goes with a URL; this filesystem is made")
            self.fs, self.root = url_or_fs, str(root).rstrip("/")
        self.protocols = protocols(self.fs)
        self.protocol = self.protocols[0]
        self.url = self.fs.unstrip_protocol(self.root) if self.root else f"{self.protocol}://"
        self.small = int(small)
        self.block_size = block_size
        self.open_options: dict[str, Any] = {} if block_size is None else {"block_size": block_size}
        # how a write commits (the module's docstring)
        self.strategy = "commit" if any(p in TRANSACTIONAL for p in self.protocols) else "move"
        self.conditional = any(p in CONDITIONAL for p in self.protocols)
        self.memory = "memory" in self.protocols

    def __repr__(self) -> str:
        return f"<FsspecStore {self.url} ({self.strategy})>"

    # --- keys ----------------------------------------------------------------------

    def path(self, key: str) -> str:
        """The filesystem path of ``key``."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a key is a non-empty string, not {key!r:.60}")
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{key!r:.80} is not a relative key of {self.url} (no leading "
                             f"'/', no empty, '.' or '..' parts): it could reach outside it")
        return f"{self.root}/{key}" if self.root else key

    def key(self, path: str) -> str:
        """The key of a filesystem path under the root (what ``find`` returns)."""
        head = f"{self.root}/" if self.root else ""
        if not path.startswith(head):
            raise ValueError(f"{path!r} is not under {self.url}")
        return str(path[len(head):])

    def describe(self, key: str) -> str:
        return str(self.fs.unstrip_protocol(self.path(key)))

    def temporary_path(self, path: str) -> str:
        folder, _, base = path.rpartition("/")
        name = f".{base}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}{TMP_SUFFIX}"
        return f"{folder}/{name}" if folder else name

    def make_parent(self, path: str) -> None:
        """Create the folder of ``path`` where the filesystem has real folders."""
        folder = path.rpartition("/")[0]
        if folder and self.strategy == "move":
            self.fs.makedirs(folder, exist_ok=True)

    def check(self) -> None:
        """Raise a clear error if the store's bucket (the root's first part, on
        filesystems with buckets) does not exist or cannot be reached."""
        if self.memory or self.fs.root_marker or not self.root:
            return
        bucket = self.root.split("/", 1)[0]
        self.fs.invalidate_cache(bucket)
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{self.url}: the bucket {bucket!r} does not exist; create it first (for S3: "
                f"aws s3 mb {self.protocol}://{bucket}) or check the URL and "
                f"storage_options") from None
        except PermissionError:
            pass        # credentials may reach their prefix and not the bucket: let them try
        except Exception as e:
            raise OSError(f"{self.url}: cannot reach the bucket {bucket!r} ({e}); check the "
                          f"URL and the endpoint or credentials in storage_options") from e

    # --- the Store protocol --------------------------------------------------------

    def open_writer(self, key: str, *, mode: Optional[int] = None) -> _FsspecWriter:
        """Start writing ``key`` (``mode``: object stores have no permission bits)."""
        return _FsspecWriter(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        path = self.path(key)
        self.fs.invalidate_cache(path)
        if self.memory:
            # fsspec's memory filesystem hands out its stored file object itself:
            # readers get a copy of their own
            f = io.BytesIO(self.fs.cat_file(path))
            f.name = self.describe(key)
            return f
        # s3fs reads every range of the object on the condition of the ETag it saw at
        # open: an object replaced mid-read raises instead of mixing two versions
        opened: BinaryIO = self.fs.open(path, "rb", **self.open_options)
        return opened

    def open_ranged(self, key: str) -> BinaryIO:
        """A seekable reader of ``key`` that fetches only the byte ranges read,
        each with one request (ranged.RangedReader: a little ahead, growing while
        reads are sequential), for reading the header and table of contents of a
        large object in O(1) requests. On S3 every range is read on the condition
        of the ETag seen at open, as ``open_reader``'s are."""
        if self.memory:
            return self.open_reader(key)        # in memory already: a copy of its own
        path = self.path(key)
        self.fs.invalidate_cache(path)
        try:
            # no read-ahead cache of the file's own: the reader decides what to fetch
            raw = self.fs.open(path, "rb", cache_type="none")
        except TypeError:       # a filesystem whose files take no cache_type
            raw = self.fs.open(path, "rb")
        try:
            return cast(BinaryIO, RangedReader.over_file(raw, self.describe(key)))
        except BaseException:
            raw.close()
            raise

    def read(self, key: str) -> bytes:
        """The whole object ``key`` (FileNotFoundError if it is missing)."""
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    def stat(self, key: str) -> StoreStat:
        path = self.path(key)
        self.fs.invalidate_cache(path)
        info = self.fs.info(path)
        if info.get("type") != "file":
            raise FileNotFoundError(f"no object {self.describe(key)} (a folder is there)")
        return StoreStat(int(info["size"]), mtime(info))

    def delete(self, key: str) -> bool:
        try:
            self.stat(key)
        except FileNotFoundError:
            return False
        try:
            self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            return False
        finally:
            self.fs.invalidate_cache(self.path(key))
        return True

    def remove(self, keys: Iterable[str]) -> None:
        """Remove every one of ``keys`` that exists (one request per thousand keys
        on S3)."""
        paths = [self.path(k) for k in keys]
        if not paths:
            return
        try:
            self.fs.rm(paths)
        except FileNotFoundError:       # filesystems that refuse to remove what is not there
            for p in paths:
                try:
                    self.fs.rm_file(p)
                except FileNotFoundError:
                    pass
        finally:
            for p in paths:
                self.fs.invalidate_cache(p)

    def keys_starting(self, head: str) -> list[str]:
        """The keys that start with ``head`` in its folder, not in sub-folders of
        it (``report@`` finds ``report@info.json``, ``report@v1.torpor``): on
        S3 one listing of just those keys, elsewhere a listing of the folder."""
        path = self.path(head)
        folder, _, base = path.rpartition("/")
        self.fs.invalidate_cache(folder)
        try:
            if "s3" in self.protocols:
                found = self.fs.find(folder, prefix=base)
            else:
                found = self.fs.find(folder, maxdepth=1)
        except FileNotFoundError:
            return []
        return [self.key(p) for p in found if p.rpartition("/")[0] == folder
                and p.rpartition("/")[2].startswith(base)]

    # --- conditional writes (one PUT, only if the object is still as read) ---------

    def read_tagged(self, key: str) -> tuple[Optional[bytes], Optional[str]]:
        """(the object's bytes or None if there is none, its tag: the ETag on a
        store with conditional writes, else None). The tag is read before the
        bytes, so a conditional ``put`` with it fails if they are not the
        latest."""
        path = self.path(key)
        tag = None
        if self.conditional:
            self.fs.invalidate_cache(path)
            try:
                tag = self.fs.info(path).get("ETag")
            except FileNotFoundError:
                return None, None
        try:
            return self.read(key), tag
        except FileNotFoundError:
            return None, None

    def put(self, key: str, data: bytes, *, tag: Optional[str] = None,
            existed: bool = False) -> bool:
        """Write ``data`` as ``key`` in one PUT. On a store with conditional
        writes (S3), only if the object is still the one ``read_tagged`` saw
        (its ``tag``; no object at all when not ``existed``): False if another
        writer changed it in between. Elsewhere the PUT is unconditional (the
        last writer wins) and this returns True."""
        path = self.path(key)
        if self.strategy != "commit":
            with self.open_writer(key) as w:
                w.write(data)
            return True
        cond: dict[str, str] = {}
        if self.conditional:
            cond = {"IfMatch": tag} if existed and tag else {} if existed else {"IfNoneMatch": "*"}
        try:
            self.fs.pipe_file(path, data, **cond)
        except FileExistsError:
            return False
        except OSError as e:
            code = error_code(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if cond and code in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
                self.conditional = False        # an S3 look-alike without conditional PUTs
                self.fs.pipe_file(path, data)
                return True
            raise
        finally:
            self.fs.invalidate_cache(path)
        return True
