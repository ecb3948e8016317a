"""The torpor container's fixed pieces: preamble, header, table of contents,
footer and the named records of its sections; and ``Source``, sequential reads
over any binary stream.

docs/FORMAT.md is the byte-level description. ``writer.ContainerWriter`` writes a
container in one pass (it never seeks, so a file can go to a pipe or socket);
``reader.ContainerReader`` reads one in sequence from any stream, or through the table of
contents when the file is seekable (which is also how ``mmap=True`` maps raw
array sections).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import mmap as _mmap
import os
import platform
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple, Optional

import numpy as np

from ..errors import CorruptFileError, FormatError, TorporError
from ..version import __version__
from . import codec, messagepack
from .constants import (CODEC_LZ4, CODEC_NAMES, CODEC_RAW, END_MAGIC, FOOTER_SIZE, FORMAT_VERSION, MAGIC,
                        PREAMBLE_SIZE, READABLE_VERSIONS, SECTION_ARRAY, SECTION_NAMES, TOC_MAGIC)

PREAMBLE = struct.Struct("<8sHHI")          # magic, u16 version, u16 flags, u32 header length
SECTION = struct.Struct("<4sBBBBIIQQ")      # magic kind codec 0 0 index meta_len raw_len 0
U64 = struct.Struct("<Q")
FOOTER = struct.Struct("<QQ8s")             # toc offset, toc length, END_MAGIC
TOC_HEAD = struct.Struct("<4sIQ")           # TOC_MAGIC, 0, toc length
MAX_META = 16 << 20
MAX_HEADER = 64 << 20
#: Chunks in flight per thread: enough that a worker never waits for the next chunk
#: while the main thread writes (or reads), few enough to bound memory.
PIPELINE_DEPTH = 2


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def torpor_version() -> str:
    return __version__


class TocEntry(NamedTuple):
    """One section as the table of contents lists it (on disk: a list of these
    eight fields in this order)."""
    kind: int           # SECTION_*
    offset: int         # byte offset of the section header
    payload: int        # byte offset of the payload
    stored: int         # payload length in the file
    raw: int            # payload length once decoded
    codec: int          # CODEC_*
    checksum: int       # xxh3-64 of the section header (fixed part and meta)
    meta: dict[str, Any]  # dtype / shape / order of an array, type of a bytes section

    def to_list(self) -> list[Any]:
        return list(self)


class Toc(dict):
    """The table of contents: a dict as written (``sections``, ``globals``,
    ``memo``, and whatever the session layer adds), with ``sections`` as
    TocEntry records and ``offset``, where the table starts in the file."""
    offset: Optional[int] = None


def _toc_entry(t, i, name):
    if not isinstance(t, list) or len(t) < 8 or not all(type(x) is int for x in t[:7]) \
            or not isinstance(t[7], dict):
        raise CorruptFileError(f"{name}: entry {i} of the table of contents is not well formed")
    return TocEntry(*t[:8])


def make_header(metadata: Optional[dict[str, Any]], implementation: str,
                codec_id: int) -> dict[str, Any]:
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    return {
        # only lz4 files can hold bit-plane chunks (format 2): the others stay
        # version 1, which torpor 0.1 reads too
        "format": FORMAT_VERSION if codec_id == CODEC_LZ4 else 1,
        "torpor": torpor_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": sys.platform,
        "byteorder": sys.byteorder,
        "implementation": implementation,
        "codec": CODEC_NAMES[codec_id],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
        "metadata": metadata,
    }


def header_bytes(header):
    """The preamble, header document and header checksum of a file."""
    body = messagepack.packb(header)
    if len(body) > MAX_HEADER:
        raise FormatError(f"the header is {len(body)} bytes; keep metadata under {MAX_HEADER} bytes")
    pre = PREAMBLE.pack(MAGIC, header.get("format", FORMAT_VERSION), 0, len(body))
    return pre + body + U64.pack(codec.checksum(pre + body))


# --- reading -------------------------------------------------------------------------

class Source:
    """Sequential reads with position tracking over a binary file object."""

    def __init__(self, f: BinaryIO, name: str = "the file") -> None:
        self.f = f
        self.name = name
        self.pos = 0
        self.size: Optional[int] = None
        self.version: Optional[int] = None    # the preamble's, once read_header has read it
        self.can_readinto = getattr(f, "readinto", None) is not None

    def read(self, n, what="data"):
        if n < 0:
            raise CorruptFileError(f"{self.name}: negative length for {what}")
        if self.size is not None and n > self.size - self.pos:
            raise CorruptFileError(
                f"{self.name} is truncated or damaged: {what} at byte {self.pos} needs {n} "
                f"bytes but the file ends after {self.size - self.pos}")
        # A stream of unknown size is read in pieces past 1 MiB, so a false length
        # costs at most what the stream really holds.
        if n <= (1 << 24 if self.size is not None else 1 << 20):
            data = self.f.read(n)
            if data and len(data) < n:
                # an unbuffered pipe or socket returns what it has: keep reading
                # until n bytes or the end (a short read is not yet truncation)
                parts = [data]
                got = len(data)
                while got < n:
                    piece = self.f.read(n - got)
                    if not piece:
                        break
                    parts.append(piece)
                    got += len(piece)
                data = b"".join(parts)
        else:
            # read big pieces into a buffer of the final size: no chain of copies, and a
            # hostile length is bounded by what the stream really holds
            buf = bytearray()
            while len(buf) < n:
                piece = self.f.read(min(1 << 24, n - len(buf)))
                if not piece:
                    break
                buf += piece
            data = bytes(buf)
        if data is None:
            raise FormatError(f"{self.name} is a non-blocking stream that had no data ready")
        if len(data) != n:
            raise CorruptFileError(
                f"{self.name} is truncated: {what} at byte {self.pos} needs {n} bytes, "
                f"only {len(data)} were left")
        self.pos += n
        return data

    def read_into(self, view, what="data"):
        """Fill ``view`` from the stream (``readinto`` must exist)."""
        n = len(view)
        got = 0
        while got < n:
            more = self.f.readinto(view[got:])
            if more is None:
                raise FormatError(f"{self.name} is a non-blocking stream that had no data ready")
            if not more:
                raise CorruptFileError(
                    f"{self.name} is truncated: {what} at byte {self.pos} needs {n} bytes, "
                    f"only {got} were left")
            got += more
        self.pos += n

    def skip(self, n, what="padding"):
        if self.size is not None:
            if n > self.size - self.pos:
                raise CorruptFileError(f"{self.name} is truncated: {what} runs past the end")
            self.f.seek(n, io.SEEK_CUR)
            self.pos += n
        else:
            self.read(n, what)

    def seek(self, pos):
        self.f.seek(pos)
        self.pos = pos

    def at_end(self):
        """True when nothing follows the current position."""
        if self.size is not None:
            return self.pos == self.size
        return not self.f.read(1)


def open_source(f: BinaryIO, name: str) -> Source:
    src = Source(f, name)
    try:
        seekable = f.seekable()
    except (AttributeError, ValueError, OSError):
        seekable = False
    if seekable:
        start = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(start)
        if start:
            raise FormatError(f"{name}: reading a torpor file that does not start at position 0 of its stream is not supported")
        src.size = end
    return src


def read_header(src: Source) -> dict[str, Any]:
    pre = src.read(PREAMBLE_SIZE, "the preamble")
    magic, version, flags, hlen = PREAMBLE.unpack(pre)
    if magic != MAGIC:
        if magic[1:4] == b"TPR":
            raise CorruptFileError(f"{src.name} has a damaged torpor signature (was it transferred in text mode?)")
        raise FormatError(f"{src.name} is not a torpor file (it does not start with the torpor signature)")
    if hlen > MAX_HEADER:
        raise CorruptFileError(f"{src.name}: header length {hlen} is implausible")
    body = src.read(hlen, "the header")
    digest = U64.unpack(src.read(8, "the header checksum"))[0]
    # The preamble, the header and its checksum keep this layout in every format
    # version, so the checksum is checked first: a damaged version byte is damage,
    # not a file from a newer torpor.
    if codec.checksum(pre + body) != digest:
        raise CorruptFileError(f"{src.name}: the header checksum does not match")
    if version not in READABLE_VERSIONS:
        raise FormatError(
            f"{src.name} uses torpor format version {version}; this torpor ({torpor_version()}) "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}. Upgrade torpor to read it.")
    if flags:
        raise FormatError(f"{src.name} uses format flags 0x{flags:04x} that this torpor does not know")
    header = messagepack.unpackb(body, what=f"{src.name}'s header")
    if not isinstance(header, dict):
        raise CorruptFileError(f"{src.name}: the header is not a map")
    src.version = version
    return header


def read_toc(src: Source) -> Toc:
    """Read the table of contents of a seekable file, then return to the first section."""
    assert src.size is not None     # seekable: the callers checked
    here = src.pos
    if src.size < here + FOOTER_SIZE + TOC_HEAD.size + 8:
        raise CorruptFileError(f"{src.name} is truncated: it ends before its table of contents")
    src.seek(src.size - FOOTER_SIZE)
    offset, tlen, end = FOOTER.unpack(src.read(FOOTER_SIZE, "the footer"))
    if end != END_MAGIC:
        raise CorruptFileError(f"{src.name} is truncated or damaged: it does not end with the torpor end marker")
    if offset < here or offset + TOC_HEAD.size + tlen + 8 + FOOTER_SIZE != src.size:
        raise CorruptFileError(f"{src.name}: the footer points to a table of contents outside the file")
    src.seek(offset)
    toc = read_toc_block(src)
    toc.offset = offset
    src.seek(here)
    return toc


def read_toc_block(src, head=None):
    """The table of contents at the current position (``head``: its first bytes,
    already read)."""
    if head is None:
        head = src.read(TOC_HEAD.size, "the table of contents")
    magic, _, tlen = TOC_HEAD.unpack(head)
    if magic != TOC_MAGIC:
        raise CorruptFileError(f"{src.name}: expected the table of contents at byte {src.pos - len(head)}")
    body = src.read(tlen, "the table of contents")
    digest = U64.unpack(src.read(8, "the table of contents checksum"))[0]
    if codec.checksum(body) != digest:
        raise CorruptFileError(f"{src.name}: the table of contents checksum does not match")
    doc = messagepack.unpackb(body, what=f"{src.name}'s table of contents")
    if not isinstance(doc, dict) or not isinstance(doc.get("sections"), list):
        raise CorruptFileError(f"{src.name}: the table of contents is not well formed")
    # what info and the allow-list check read as they are: the classes the stream
    # names, and how many shared objects it has
    names = doc.get("globals", [])
    if not isinstance(names, list) or not all(type(g) is str for g in names):
        raise CorruptFileError(f"{src.name}: the table of contents is not well formed: its "
                               f"list of classes and callables is not a list of names")
    memo = doc.get("memo", 0)
    if type(memo) is not int or memo < 0:
        raise CorruptFileError(f"{src.name}: the table of contents is not well formed: its "
                               f"count of shared objects is not a count")
    toc = Toc(doc)
    toc["sections"] = [_toc_entry(t, i, src.name) for i, t in enumerate(doc["sections"])]
    return toc


@contextlib.contextmanager
def damaged_as_corrupt(name: str) -> Iterator[None]:
    """The container's reading code checks what it reads; should a malformed value
    still slip through to a Python error, the caller sees a CorruptFileError
    naming the file, never a bare TypeError (OSError and MemoryError pass)."""
    try:
        yield
    except TorporError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, struct.error,
            UnicodeDecodeError) as e:
        raise CorruptFileError(f"{name} is damaged: {type(e).__name__}: {e}") from e


def map_file(f: BinaryIO) -> _mmap.mmap:
    """A copy-on-write memory map of the whole file (arrays stay writable, the file
    is never modified)."""
    return _mmap.mmap(f.fileno(), 0, access=_mmap.ACCESS_COPY)


def describe_sections(entries: Iterable[TocEntry]) -> list[dict[str, Any]]:
    """``info``'s view of TocEntry records: plain dicts with names for the codes
    (the meta's keys first, so a crafted meta cannot replace the fixed fields).
    Array sections also say whether ``load(..., mmap=True)`` maps them
    (``mappable``: stored raw, that is saved with ``compress=None``, and not empty)."""
    out: list[dict[str, Any]] = []
    for s in entries:
        d = dict(s.meta)
        d.update({"kind": SECTION_NAMES.get(s.kind, s.kind), "offset": s.offset,
                  "payload_offset": s.payload, "length": s.stored, "raw_length": s.raw,
                  "codec": CODEC_NAMES.get(s.codec, s.codec), "checksum": f"{s.checksum:016x}"})
        if s.kind == SECTION_ARRAY:
            d["mappable"] = s.codec == CODEC_RAW and s.raw > 0
        out.append(d)
    return out
