"""torpor files named by URL: ``s3://bucket/state.torpor``, ``gs://``, ``memory://``,
anything fsspec knows, and fsspec's ``OpenFile`` objects (what ``fsspec.open``
returns), as every entry point takes them (``locate``).

- A URL is ``scheme://...`` with a scheme of two letters or more (``C:/x`` and
  ``C:\\x`` stay Windows paths); anything else is a local path, untouched.
- ``file://`` URLs (and fsspec's other names for local files) are local paths:
  saved through a temporary file, fsynced and renamed, and mappable, as any
  path. A ``file://`` URL is read as RFC 8089 and ``pathlib.Path.as_uri`` write
  them (``%20`` is a space) and needs no fsspec.
- Any other URL is a ``RemoteFile``: an ``FsspecStore`` on the URL's folder and
  the file's name as its key, so a save is as atomic as the store allows (one
  PUT, or a multipart upload completed at the end; see fsspec_store), and a read
  fetches byte ranges on demand (``ranged``), the ETag pinned on S3.
- fsspec is imported when the first URL is used, never by ``import torpor``.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any, BinaryIO, Optional, Union, cast

from .fsspec_store import FsspecStore, filesystem, protocols
from .ranged import RangedReader

if TYPE_CHECKING:
    from .fsspec_store import _FsspecWriter

#: ``scheme://``; a one-letter scheme would be a Windows drive.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")
_EXAMPLE = "s3://bucket/state.torpor"


def is_url(file: object) -> bool:
    """True for a string that names a file by URL (``scheme://...``)."""
    return isinstance(file, str) and _URL.match(file) is not None


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


class RemoteFile:
    """A torpor file in an fsspec filesystem: ``store`` (an FsspecStore on its
    folder) and ``key`` (its name there); ``name`` is how messages call it."""

    __slots__ = ("store", "key", "name")

    def __init__(self, fs: Any, path: str, name: str) -> None:
        folder, _, base = path.rpartition("/")
        if not base:
            raise ValueError(f"{name} names a folder, not a file: end it with the file's "
                             f"name, as in {name.rstrip('/')}/state.torpor")
        if not folder and not fs.root_marker:
            raise ValueError(f"{name} names a bucket, not a file in it: add the file's "
                             f"name, as in {name.rstrip('/')}/state.torpor")
        self.store = FsspecStore(fs, root=folder)
        self.key = base
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteFile {self.name}>"

    def open_writer(self, mode: Optional[int] = None) -> _FsspecWriter:
        """An atomic writer (committed or aborted as a whole; see FsspecStore)."""
        return self.store.open_writer(self.key, mode=mode)

    def open_reader(self) -> BinaryIO:
        """A seekable reader fetching byte ranges on demand."""
        try:
            return self.store.open_ranged(self.key)
        except FileNotFoundError:
            raise FileNotFoundError(f"no such file: {self.name} (check the URL, and the "
                                    f"endpoint or credentials in storage_options)") from None


def local_path(url: str) -> str:
    """The local path of a ``file://`` URL (``file:///abs/path``,
    ``file://localhost/abs/path``), percent escapes decoded."""
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{url} names the host {parts.netloc!r}: a file of this machine is "
                         f"file:///absolute/path (three slashes), or give the path itself")
    if parts.query or parts.fragment:
        raise ValueError(f"{url}: a '?' or '#' in a file:// URL is written %3F or %23 (as "
                         f"pathlib.Path.as_uri() writes it), or give the path itself")
    if not parts.path:
        raise ValueError(f"{url} names no file: write file:///absolute/path")
    if os.name == "nt":             # file:///C:/x -> C:\x
        from urllib.request import url2pathname
        return str(url2pathname(parts.path))
    return urllib.parse.unquote(parts.path)


def _in(fs: Any, path: str, name: str) -> Union[str, RemoteFile]:
    """A local path for fsspec's local filesystem (local saves are atomic by
    rename, and mappable), else a RemoteFile."""
    if "file" in protocols(fs):
        return path
    return RemoteFile(fs, path, name)


def _open_file_class() -> Any:
    """fsspec's OpenFile, if fsspec is imported (an object cannot be one if not)."""
    core = sys.modules.get("fsspec.core")
    return getattr(core, "OpenFile", None)


def locate(file: Any, storage_options: Optional[dict[str, Any]] = None) -> Any:
    """What torpor does with ``file``, as given to dump/load/info/verify, sessions
    and module dumps: a URL or an fsspec ``OpenFile`` becomes a RemoteFile (or a
    local path, for local files); a path or a file object is returned as is.
    ``storage_options``: passed to fsspec for a URL (an endpoint, credentials);
    an error with anything else, where it would be silently ignored."""
    if isinstance(file, RemoteFile):
        return file
    if is_url(file):
        if storage_options is not None and not isinstance(storage_options, dict):
            raise TypeError(f"storage_options must be a dict (passed to fsspec), not "
                            f"{type(storage_options).__name__}")
        if scheme(file) == "file":
            return local_path(file)
        if file.endswith("/"):
            raise ValueError(f"{file} names a folder, not a file: end it with the file's "
                             f"name, as in {file}state.torpor")
        fs, path = filesystem(file, storage_options)
        return _in(fs, path, file)
    open_file = _open_file_class()
    if open_file is not None and isinstance(file, open_file):
        if storage_options:
            raise TypeError("storage_options= goes with a URL; this fsspec OpenFile has its "
                            "filesystem (give the options to fsspec.open)")
        if file.compression:
            raise ValueError(f"{file.path}: torpor compresses its files itself; open it "
                             f"without compression= ({file.compression!r})")
        return _in(file.fs, file.path, str(file.fs.unstrip_protocol(file.path)))
    if storage_options:
        if file is None:
            what = "the default file (no file was given)"
        elif isinstance(file, (str, os.PathLike)):
            what = f"the local path {os.fspath(file)!r:.80}"
        else:
            what = f"a {type(file).__name__} object"
        raise TypeError(f"storage_options= is for URLs ({_EXAMPLE}, memory://name, ...), "
                        f"not for {what}")
    return file


def ranged_file(f: Any) -> Optional[BinaryIO]:
    """A ranged reader of an open fsspec file object (``fs.open(path, "rb")``)
    at its start, whatever cache it was opened with: s3fs's default reads ahead
    50 MiB at the first read, the size of many whole files, when ``info`` needs a
    few KiB. None for any other file object, used as it is. The ranges are read
    as the file reads them (``_fetch_range``: pinned to the ETag seen at open on
    S3); the file stays open and where it was."""
    spec = sys.modules.get("fsspec.spec")
    buffered = getattr(spec, "AbstractBufferedFile", None)
    if buffered is None or not isinstance(f, buffered):
        return None
    if f.mode != "rb" or f.closed or f.tell() != 0:
        return None
    name = str(f.fs.unstrip_protocol(f.path))
    return cast(BinaryIO, RangedReader(f._fetch_range, f.size, name))
