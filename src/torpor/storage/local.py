"""Local files: atomic saves through a temporary file in the same folder.

``LocalFileStore().open_writer(path)`` creates ``.NAME.XXXX.torpor-tmp`` beside
``path``, writes it through a sink (``sinks``: blocks preallocated, early
writeback, optionally O_DIRECT), and on ``commit`` flushes, fsyncs, gives it the
replaced file's permissions (or the umask's) and renames it over ``path``, then
fsyncs the folder. ``abort`` removes the temporary file: the previous file is
untouched either way. A ``path`` that is a symbolic link stays one: the save
goes to the file it points to (resolved through every link, created if the
link dangles), with the temporary file in that file's folder.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from typing import TYPE_CHECKING, BinaryIO, Optional, Union

from .base import StoreStat, WriterBase
from .sinks import BufferedSink, DirectSink, open_sink, release_cached

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

TMP_SUFFIX = ".torpor-tmp"
#: This machine, as temporary names record it (a folder may be shared over NFS:
#: only this machine's own leftovers are judged by its process table).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
#: .NAME.HOST.PID.RANDOM.torpor-tmp
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d{1,10})\.[^.]+"
                       + re.escape(TMP_SUFFIX) + "$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True             # exists (another user's), or cannot tell: keep its file
    return True


def stale_temp_files(folder: str) -> list[str]:
    """Temporary files in ``folder`` left by saves of this machine whose process is
    gone (killed with SIGKILL, or the machine lost power mid-save)."""
    found: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for e in entries:
        m = _TMP_NAME.match(e.name)
        if m and m["host"] == _HOST and not _alive(int(m["pid"])):
            found.append(e.path)
    return found


def remove_stale_temp_files(folder: str) -> list[str]:
    """Remove what ``stale_temp_files`` finds; returns the paths removed."""
    removed: list[str] = []
    for path in stale_temp_files(folder):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass                 # gone already, or not ours to remove
    return removed


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


class AtomicFileWriter(WriterBase):
    """A file being written to a temporary name; see the module's docstring."""

    _fd: Optional[int]              # None once closed
    _sink: Union[BufferedSink, DirectSink]

    def __init__(self, path: str, mode: Optional[int] = None) -> None:
        shown = path
        if os.path.islink(path):
            # renaming over the link would replace it: the save goes to its target
            target = os.path.realpath(path)
            if os.path.islink(target):
                raise OSError(f"cannot save to {path}: it is a loop of symbolic links "
                              f"(through {target}); point it at a file or remove it")
            shown, path = f"{path} (a symbolic link to {target})", target
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"cannot save to {shown}: the folder {folder} does not exist")
        self.folder = folder
        if mode is None:
            try:
                mode = os.stat(path).st_mode & 0o7777
            except FileNotFoundError:
                mode = _umask_mode()
        self.mode = mode
        remove_stale_temp_files(folder)     # what killed saves left here
        self._fd, self.tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.{_HOST}.{os.getpid()}.", suffix=TMP_SUFFIX,
            dir=folder)
        try:
            release_cached(path)           # see there: why, and what it saves
            self._sink = open_sink(self._fd)
        except BaseException:
            self._discard()
            raise

    def write(self, data: ReadableBuffer) -> int:
        return self._sink.write(data)

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        self._end("commit")
        try:
            self._sink.close()
            assert self._fd is not None     # open until a commit or an abort
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.chmod(self.tmp, self.mode)
            os.replace(self.tmp, self.path)
        except BaseException:
            try:
                self._sink.abort()     # stops an O_DIRECT sink's I/O thread if it still runs
            except Exception:
                pass
            self._discard()
            raise
        _fsync_folder(self.folder)

    def abort(self) -> None:
        self._end("abort")
        try:
            self._sink.abort()
        finally:
            self._discard()

    def __del__(self) -> None:
        # a writer dropped without commit or abort leaves no temporary file behind
        if not self._ended and getattr(self, "_sink", None) is not None:
            try:
                self.abort()
            except Exception:
                pass

    def _discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def _fsync_folder(folder: str) -> None:
    """Make the rename durable (where a folder can be opened and synced)."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class LocalFileStore:
    """Files on the local filesystem. Keys are paths. With ``root``, keys are
    relative to it, may name sub-folders (created on the first write), and can
    never reach outside it: not with ``..``, an absolute path, or a symbolic
    link inside the root that points elsewhere."""

    def __init__(self, root: Union[str, os.PathLike[str], None] = None) -> None:
        self.root = None if root is None else os.path.realpath(os.fspath(root))

    def path(self, key: Union[str, os.PathLike[str]]) -> str:
        key = os.fspath(key)
        if self.root is None:
            return key
        if os.path.isabs(key):
            raise ValueError(f"{key!r} is an absolute path; keys of this store are relative to {self.root}")
        full = os.path.abspath(os.path.join(self.root, key))
        if os.path.commonpath([os.path.realpath(full), self.root]) != self.root:
            raise ValueError(f"{key!r} reaches outside {self.root}")
        return full

    def open_writer(self, key: Union[str, os.PathLike[str]], *,
                    mode: Optional[int] = None) -> AtomicFileWriter:
        path = self.path(key)
        if self.root is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.path(key)          # a folder made just now must not lead outside either
        return AtomicFileWriter(path, mode)

    def open_reader(self, key: Union[str, os.PathLike[str]]) -> BinaryIO:
        return open(self.path(key), "rb")

    def stat(self, key: Union[str, os.PathLike[str]]) -> StoreStat:
        st = os.stat(self.path(key))
        return StoreStat(st.st_size, st.st_mtime)

    def delete(self, key: Union[str, os.PathLike[str]]) -> bool:
        try:
            os.unlink(self.path(key))
            return True
        except FileNotFoundError:
            return False

    def describe(self, key: Union[str, os.PathLike[str]]) -> str:
        return self.path(key)

    def __repr__(self) -> str:
        return f"LocalFileStore({self.root!r})" if self.root else "LocalFileStore()"

