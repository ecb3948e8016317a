"""Messages between a SubprocessExecutor and its worker: torpor data in
length-prefixed frames over a pipe of their own (never the worker's stdout or
stderr, where user code and C libraries print).

A frame is a 16-byte header, ``b"TPWF"``, its kind (1 byte), 3 zero bytes and
the payload's length (8 bytes, little-endian), then the payload:

- ``INLINE``: the payload is a whole torpor file (raw sections, no compression);
- ``FILE``: the payload is the UTF-8 path of a torpor file holding the message,
  written uncompressed in ``/dev/shm`` (or the temporary folder where there is no
  ``/dev/shm``, or it is full) by the sender, loaded with ``mmap=True`` by the
  receiver and then unlinked: a large array crosses the process boundary by one
  write into shared memory, and is mapped, not copied, on the other side.

``encode`` decides which: it writes the message into memory up to ``spill_at``
bytes (1 MiB) and, if it grows beyond that, moves it to a spill file and writes
the rest there directly (arrays straight from their buffers). A frame longer
than ``MAX_FRAME`` or a header without the magic is a broken stream
(``ProtocolError``), never an allocation of whatever length garbage names; a
spill file is only read and unlinked if it is one of the sender's (its folder
and name prefix are agreed at the handshake)."""

from __future__ import annotations

import errno
import io
import os
import secrets
import struct
import tempfile
from typing import Any, BinaryIO, Iterable, Optional, Union, cast

from ...engine import pipeline
from ...engine.safety import Policy

MAGIC = b"TPWF"
HEADER = struct.Struct("<4sB3xQ")
INLINE = 0
FILE = 1
#: The longest frame either side accepts (a request's code, an inline message).
MAX_FRAME = 64 << 20
#: Messages larger than this go through a spill file instead of the pipe.
SPILL_AT = 1 << 20
#: The longest spill-file path a FILE frame may carry.
_MAX_PATH = 4096
#: A pipe's buffer is raised to this (Linux's default limit for unprivileged
#: processes): an inline frame of up to 1 MiB then crosses in one write.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031

_SAVE = pipeline.SaveOptions.of(None)

Frame = tuple[int, Union[bytes, str]]


class ProtocolError(ConnectionError):
    """The stream between the executor and its worker is broken: a frame with a
    bad header or length, a stream that ends inside a frame, a spill file that
    is not the sender's."""


def enlarge_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Raise a pipe's buffer (Linux; elsewhere nothing happens)."""
    try:
        import fcntl
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except (ImportError, OSError):
        pass


# --- spill files --------------------------------------------------------------------

def spill_dirs() -> list[str]:
    """Where spill files go, best first: ``/dev/shm`` (memory, no disk) where it
    is a writable folder, then the temporary folder."""
    out = []
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        out.append(shm)
    tmp = tempfile.gettempdir()
    if os.path.realpath(tmp) not in [os.path.realpath(d) for d in out]:
        out.append(tmp)
    return out


class SpillPlace:
    """The spill files of one worker: in ``dirs`` (tried in order: a full one
    passes to the next), named ``<prefix><n>.<random>.torpor``."""

    def __init__(self, dirs: Iterable[str], prefix: str) -> None:
        self.dirs = [os.path.realpath(d) for d in dirs]
        if not self.dirs:
            raise ValueError("SpillPlace needs at least one folder")
        if not prefix or "/" in prefix or os.sep in prefix or prefix.startswith("."):
            raise ValueError(f"bad spill prefix {prefix!r}")
        self.prefix = prefix
        self._n = 0

    def new_path(self, d: str) -> str:
        self._n += 1
        return os.path.join(d, f"{self.prefix}{self._n}.{secrets.token_hex(4)}.torpor")

    def owns(self, path: str) -> bool:
        """Whether ``path`` is a spill file of this place (so the receiver may read
        and delete it)."""
        if not isinstance(path, str) or "\0" in path:
            return False
        folder, name = os.path.split(path)
        return (os.path.realpath(folder) in self.dirs and name.startswith(self.prefix)
                and name.endswith(".torpor") and "/" not in name[len(self.prefix):])

    def cleanup(self) -> int:
        """Delete every spill file of this place left behind (a side that died
        between writing and reading one); how many."""
        n = 0
        for d in self.dirs:
            try:
                names = os.listdir(d)
            except OSError:
                continue
            for name in names:
                if name.startswith(self.prefix) and name.endswith(".torpor"):
                    try:
                        os.unlink(os.path.join(d, name))
                        n += 1
                    except OSError:
                        pass
        return n


class _NoSpace(OSError):
    """The spill folder is full: the message is written again in the next one."""


class _SpillWriter:
    """A binary file object for the engine: bytes stay in memory up to ``limit``,
    then everything goes to a new spill file (and arrays are written to it
    straight from their buffers)."""

    def __init__(self, place: Optional[SpillPlace], folder: Optional[str], limit: int) -> None:
        self.buf = bytearray()
        self.place = place
        self.folder = folder
        self.limit = limit
        self.fd: Optional[int] = None
        self.path: Optional[str] = None

    def write(self, data: Any) -> int:
        m = memoryview(data)
        if m.ndim != 1 or m.format not in ("B", "b", "c"):
            m = m.cast("B")
        n = m.nbytes
        if self.fd is None:
            if self.place is None or len(self.buf) + n <= self.limit:
                self.buf += m
                return n
            self._spill()
        self._write(m)
        return n

    def _spill(self) -> None:
        assert self.place is not None and self.folder is not None
        self.path = self.place.new_path(self.folder)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        buf, self.buf = self.buf, bytearray()
        self._write(memoryview(buf))

    def _write(self, m: memoryview) -> None:
        assert self.fd is not None
        try:
            while m.nbytes:
                k = os.write(self.fd, m[:1 << 30])
                m = m[k:]
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _NoSpace(e.errno, f"{self.folder} is full") from None
            raise

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = None


def encode(obj: Any, place: Optional[SpillPlace] = None, spill_at: int = SPILL_AT) -> Frame:
    """``obj`` as a frame: ``(INLINE, torpor bytes)`` or, once it is larger than
    ``spill_at`` and a ``place`` is given, ``(FILE, path of a spill file)``.
    Raises what the engine raises for an object it cannot save (nothing is left
    behind)."""
    folders: list[Optional[str]] = list(place.dirs) if place is not None else [None]
    for i, folder in enumerate(folders):
        w = _SpillWriter(place, folder, spill_at)
        try:
            pipeline.save(obj, cast(BinaryIO, w), _SAVE)
        except _NoSpace:
            w.discard()
            if i == len(folders) - 1:
                raise OSError(errno.ENOSPC, "no room for a spill file in "
                              + ", ".join(str(f) for f in folders)) from None
            continue
        except BaseException:
            w.discard()
            raise
        w.close()
        if w.path is None:
            return INLINE, bytes(w.buf)
        return FILE, w.path
    raise AssertionError("unreachable")


def decode(frame: Frame, policy: Optional[Policy] = None,
           place: Optional[SpillPlace] = None) -> Any:
    """The object of ``frame`` (loaded under ``policy``: safe by default). A
    spill file is mapped (``mmap=True``: its arrays are not copied), and
    unlinked whatever happens; only files ``place`` owns are accepted."""
    kind, payload = frame
    options = pipeline.LoadOptions(policy if policy is not None else Policy(),
                                   mmap=kind == FILE)
    if kind == INLINE:
        assert isinstance(payload, bytes)
        return pipeline.load(io.BytesIO(payload), options)
    assert isinstance(payload, str)
    if place is None or not place.owns(payload):
        raise ProtocolError(f"the worker named a spill file that is not one of its own "
                            f"({payload!r:.200}); nothing was read")
    try:
        return pipeline.load(payload, options)
    finally:
        try:
            os.unlink(payload)
        except OSError:
            pass


def discard(frame: Frame, place: Optional[SpillPlace]) -> None:
    """Drop a frame that will not be decoded (its spill file is deleted)."""
    kind, payload = frame
    if kind == FILE and place is not None and isinstance(payload, str) and place.owns(payload):
        try:
            os.unlink(payload)
        except OSError:
            pass


# --- frames on a pipe ------------------------------------------------------------------

def pack(frame: Frame) -> list[bytes]:
    kind, payload = frame
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    if len(data) > MAX_FRAME:
        raise ValueError(f"a message of {len(data)} bytes is longer than a frame may be "
                         f"({MAX_FRAME} bytes)")
    return [HEADER.pack(MAGIC, kind, len(data)), data]


def write_frame(fd: int, frame: Frame) -> None:
    """Write a whole frame to the blocking ``fd`` (BrokenPipeError if the other
    side is gone)."""
    parts = pack(frame)
    data = memoryview(parts[0] + parts[1]) if len(parts[1]) < 65536 else None
    if data is not None:
        while data.nbytes:
            data = data[os.write(fd, data):]
        return
    for part in parts:
        m = memoryview(part)
        while m.nbytes:
            m = m[os.write(fd, m[:1 << 30]):]


def _check_header(head: bytes) -> tuple[int, int]:
    magic, kind, length = HEADER.unpack(head)
    if magic != MAGIC:
        raise ProtocolError(f"broken stream: expected a frame header, got {head!r}")
    if kind not in (INLINE, FILE):
        raise ProtocolError(f"broken stream: unknown frame kind {kind}")
    limit = MAX_FRAME if kind == INLINE else _MAX_PATH
    if length > limit:
        raise ProtocolError(f"broken stream: a frame of {length} bytes is longer than the "
                            f"{limit} allowed")
    return kind, length


def _payload(kind: int, data: bytes) -> Frame:
    if kind == FILE:
        try:
            return FILE, data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("broken stream: a spill-file frame whose path is not UTF-8") \
                from None
    return INLINE, data


def _read_exactly(fd: int, n: int, started: bool) -> Optional[bytes]:
    buf = bytearray(n)
    m = memoryview(buf)
    got = 0
    while got < n:
        k = os.readv(fd, [m[got:]])
        if k == 0:
            if got == 0 and not started:
                return None
            raise ProtocolError(f"broken stream: it ended inside a frame ({got} of {n} bytes)")
        got += k
    return bytes(buf)


def read_frame(fd: int) -> Optional[Frame]:
    """The next frame from the blocking ``fd``; None at the end of the stream
    (the other side closed it between frames)."""
    head = _read_exactly(fd, HEADER.size, False)
    if head is None:
        return None
    kind, length = _check_header(head)
    data = _read_exactly(fd, length, True) if length else b""
    assert data is not None
    return _payload(kind, data)


class FrameReader:
    """Frames from a non-blocking ``fd``, read as the bytes arrive (the
    executor's event loop calls ``fill`` when the pipe is readable)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.eof = False
        self._need: Optional[tuple[int, int]] = None

    def fill(self, most: int = 8 << 20) -> None:
        """Read what the pipe holds now (up to ``most`` bytes)."""
        got = 0
        while got < most and not self.eof:
            try:
                chunk = os.read(self.fd, PIPE_SIZE)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            if not chunk:
                self.eof = True
                return
            self.buf += chunk
            got += len(chunk)

    def pop(self) -> Optional[Frame]:
        """The next complete frame, if the bytes read hold one."""
        if self._need is None:
            if len(self.buf) < HEADER.size:
                return None
            self._need = _check_header(bytes(self.buf[:HEADER.size]))
        kind, length = self._need
        end = HEADER.size + length
        if len(self.buf) < end:
            return None
        data = bytes(self.buf[HEADER.size:end])
        del self.buf[:end]
        self._need = None
        return _payload(kind, data)

    @property
    def partial(self) -> bool:
        """Whether bytes of an unfinished frame were read."""
        return bool(self.buf)
