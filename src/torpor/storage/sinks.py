"""How a save to a local path puts its bytes into the temporary file of an atomic
save (``local.LocalFileStore``): through ``open_sink(fd)``.

The default, ``BufferedSink``, writes through the page cache as any file does, with
two things that matter for large saves (both Linux; elsewhere it is a plain
buffered file):

- It allocates the file's blocks ahead of the writes, 64 MiB at a time, with
  ``fallocate``. Without that, the filesystem's delayed allocation runs page by
  page inside every write, and it is the larger share of a buffered write's CPU
  time: measured on ext4, 0.16-0.64 s of kernel time to write 678 MiB plainly,
  0.10-0.17 s preallocated; in a whole 1 GiB save with early writeback (below),
  1.5 s of kernel time without preallocation, 0.25 s with it (medians of 7). The
  file is cut to its length at the end.
- It asks the kernel to start writing back every 32 MiB as soon as they are
  written (``sync_file_range``), so the disk works while the next chunks compress
  and the fsync that ends the save finds almost nothing left to do.

``DirectSink`` (``TORPOR_DIRECT_IO=1``) skips the page cache altogether: the bytes
are gathered in page-aligned staging buffers, and one I/O thread writes each full
buffer with ``O_DIRECT`` while the writer fills the next. It costs almost no CPU
and does not evict the application's cached files, which suits very large
checkpoints; but the file is then not in the page cache, so loading it soon after
reads it from the disk. Where ``O_DIRECT`` is refused (tmpfs, some filesystems, a
device needing coarser alignment) it goes on through the page cache. Files smaller
than one staging buffer are written with one ordinary write.

Errors of the I/O thread (a full disk, say) are raised by the next ``write`` or by
``close``; ``abort`` stops without writing more. Either way the caller then removes
the temporary file, so the previous file stays intact.
"""

from __future__ import annotations

import errno
import mmap
import os
import queue
import stat
import threading
import traceback
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, Union

from . import iohints

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from typing_extensions import Self

fcntl: Optional[types.ModuleType]
try:
    import fcntl
except ImportError:           # Windows
    fcntl = None

BLOCK = 4096                  # O_DIRECT offsets, lengths and addresses are multiples of this
STAGE_SIZE = 8 << 20          # direct: one staging buffer; a multiple of BLOCK
STAGES = 3                    # direct: one filling, up to two queued or being written
WRITEBACK_STEP = 32 << 20     # buffered: start writeback every this many bytes
PREALLOC_STEP = 64 << 20      # buffered: allocate the file's blocks this far ahead
BUFFER = 256 << 10            # buffered: small writes (records, headers) gather here

_O_DIRECT = getattr(os, "O_DIRECT", 0)


def release_cached(path: str) -> None:
    """Drop the page cache of the file at ``path``, which a save is about to
    replace (the file itself is untouched).

    Its cached pages become garbage at the rename anyway; released first, they
    are the memory the new file's pages are written into. So a save never holds
    the old and the new file in the page cache at once (a large save evicts half as
    much of the application's cache), and the new pages are memory that was just
    in use: on a VM that hands free memory back to its host (Firecracker, with free
    page reporting), fresh pages fault in from the host, and writing 674 MiB into
    them took 1.2-2.2 s of kernel time against 0.7-0.9 s into released ones
    (pickle, which truncates its file first, always gets the latter). Pages that are
    mapped (``load(mmap=True)`` of the old file) or dirty stay as they are."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return                      # no file yet, or not ours to read: nothing to release
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def direct_io_enabled() -> bool:
    """Whether saves use ``DirectSink``: ``TORPOR_DIRECT_IO=1``, on a system with O_DIRECT."""
    return bool(_O_DIRECT) and fcntl is not None and os.environ.get("TORPOR_DIRECT_IO", "0") == "1"


def open_sink(fd: int, direct: Optional[bool] = None) -> Union[BufferedSink, DirectSink]:
    """The sink for the file at ``fd`` (open for writing, at position 0); ``direct``
    None follows ``TORPOR_DIRECT_IO``."""
    if direct is None:
        direct = direct_io_enabled()
    return DirectSink(fd) if direct else BufferedSink(fd)


class _Sink:
    """``write(data)`` appends any C-contiguous buffer and returns its length in
    bytes; ``close()`` returns once every byte is in the file (not yet fsynced);
    as a context manager, an exception aborts instead."""

    direct = False                # O_DIRECT set on the descriptor right now
    direct_bytes = 0              # bytes written with O_DIRECT (for tests and figures)
    _fd: int
    _synced: int                  # bytes whose writeback has been started

    if TYPE_CHECKING:             # what the sinks define
        def close(self) -> None: ...
        def abort(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[types.TracebackType]) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def flush(self) -> None:
        pass

    def _writeback(self, written: int, flush: Optional[Callable[[], object]] = None) -> None:
        """Start the kernel's writeback of what was written since the last call,
        once that is WRITEBACK_STEP bytes (``flush`` first empties a user buffer)."""
        if iohints.start_writeback is not None and written - self._synced >= WRITEBACK_STEP:
            if flush is not None:
                flush()
            iohints.start_writeback(self._fd, self._synced, written - self._synced)
            self._synced = written


class BufferedSink(_Sink):
    """Page-cache writes from the caller's thread, with blocks preallocated ahead
    and early writeback (see the module's docstring)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._file = open(fd, "wb", buffering=BUFFER, closefd=False)
        self.pos = 0
        self._alloc = 0                # bytes of the file allocated ahead of the writes
        self._synced = 0
        self._prealloc = iohints.prealloc is not None

    def write(self, data: ReadableBuffer) -> int:
        n = memoryview(data).nbytes
        if self._prealloc and self.pos + n > self._alloc:
            step = max(PREALLOC_STEP, n)
            if iohints.prealloc is not None and iohints.prealloc(self._fd, self._alloc, step) == 0:
                self._alloc += step
            else:
                self._prealloc = False     # not supported here: write without it
        self._file.write(data)
        self.pos += n
        self._writeback(self.pos, self._file.flush)
        return n

    def close(self) -> None:
        self._file.close()                 # flushes; a full disk raises here
        if self._alloc > self.pos:
            os.ftruncate(self._fd, self.pos)   # give back what was allocated ahead

    def abort(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass                           # the file is being thrown away


class DirectSink(_Sink):
    """Staged O_DIRECT writes on an I/O thread (see the module's docstring)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.pos = 0                   # bytes accepted by write()
        self._stage = mmap.mmap(-1, STAGE_SIZE)
        self._view = memoryview(self._stage)
        self._fill = 0
        self._spare: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._stages = 1
        # (staging buffer, bytes in it, last?), or None to stop
        self._todo: queue.SimpleQueue[Optional[tuple[mmap.mmap, int, bool]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._stop = False
        self._written = 0              # bytes the I/O thread has written
        self._synced = 0

    # the caller's side

    def write(self, data: ReadableBuffer) -> int:
        src = memoryview(data)
        if src.ndim != 1 or src.itemsize != 1:
            src = src.cast("B")
        total = len(src)
        done = 0
        while done < total:
            k = min(STAGE_SIZE - self._fill, total - done)
            iohints.copy_into(self._view, self._fill, src[done:done + k])
            self._fill += k
            done += k
            if self._fill == STAGE_SIZE:
                self._ship(STAGE_SIZE)
        self.pos += total
        return total

    def close(self) -> None:
        """Write everything still staged; raise the I/O thread's error if it had one."""
        n = self._fill
        if self._thread is None:
            # Everything fits in one buffer: one ordinary write, no thread.
            self._fill = 0
            self._write_all(self._view[:n], False)
        else:
            self._ship(n, last=True)
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
        self._release()

    def abort(self) -> None:
        """Stop without writing anything more (after an error in the caller)."""
        self._stop = True
        if self._thread is not None:
            self._todo.put(None)
            self._thread.join()
            self._thread = None
        self._release()

    def _release(self) -> None:
        # The staging memory goes back to the OS now, not at the next collection
        # (or then, if a view of it is still alive somewhere).
        self._view.release()
        stages = [self._stage]
        while not self._spare.empty():
            stages.append(self._spare.get())
        for stage in stages:
            try:
                stage.close()
            except BufferError:
                pass

    def _ship(self, n: int, last: bool = False) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:
            self._set_direct(True)
            self._thread = threading.Thread(target=self._run, name="torpor-io", daemon=True)
            self._thread.start()
        self._view.release()
        self._todo.put((self._stage, n, last))
        if last:
            return
        if self._stages < STAGES:
            self._stage = mmap.mmap(-1, STAGE_SIZE)
            self._stages += 1
        else:
            self._stage = self._spare.get()
            if self._error is not None:
                raise self._error
        self._view = memoryview(self._stage)
        self._fill = 0

    # the I/O thread's side

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            stage, n, last = item
            try:
                if not self._stop and self._error is None:
                    with memoryview(stage) as view:
                        if last:
                            whole = n - n % BLOCK
                            self._write_all(view[:whole], self.direct)
                            self._write_all(view[whole:n], False)
                        else:
                            self._write_all(view[:n], self.direct)
            except BaseException as e:     # handed to the caller's thread
                # without the locals of this thread's frames, which hold views of
                # the staging buffers (they could not be unmapped otherwise)
                traceback.clear_frames(e.__traceback__)
                self._error = e
            if last:
                stage.close()
                return
            self._spare.put(stage)

    def _write_all(self, view: memoryview, direct: bool) -> None:
        """Write ``view`` at the current position: with O_DIRECT if ``direct`` (its
        start and length are multiples of BLOCK), else through the page cache."""
        if not direct and self.direct:
            self._set_direct(False)
        done, n = 0, len(view)
        while done < n:
            try:
                k = os.write(self._fd, view[done:])
            except OSError as e:
                if e.errno == errno.EINVAL and self.direct:
                    # The filesystem or device refused this direct write (alignment,
                    # no support): go on through the page cache, from the same place.
                    self._set_direct(False)
                    continue
                raise
            if k <= 0:
                raise OSError(errno.EIO, f"write returned {k}")
            done += k
            if self.direct:
                self.direct_bytes += k
                if k % BLOCK:
                    self._set_direct(False)   # the next offset is no longer aligned
            self._written += k
        if not self.direct:
            self._writeback(self._written)

    def _set_direct(self, on: bool) -> None:
        if fcntl is None or not _O_DIRECT:
            return
        try:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
        except OSError:
            if on:
                return               # not supported here (tmpfs, ...): stay buffered
            raise
        self.direct = on
        if on:
            self._synced = self._written
